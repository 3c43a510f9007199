"""Admission: whether a request may go to a target now (rate limits and concurrency); keys and budgets come here."""
