"""The durable store: keys, budgets, the spend ledger (and later feedback and stored responses)."""
