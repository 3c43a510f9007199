"""Attempts: the walk through a plan (failover, hedging, deadlines, each attempt sent and recorded)."""
