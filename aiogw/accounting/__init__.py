"""Accounting: what an answer cost (prices) and the running totals (the ledger)."""
