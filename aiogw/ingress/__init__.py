"""Ingress: one module per client wire format (Chat Completions and Embeddings now), decoding the request and encoding the answer around one call into the attempt stage."""
