"""Upstream: the HTTP client, its connections, and per-account TLS and proxies."""
