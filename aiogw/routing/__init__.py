"""Routing: which targets, in which order (strategies, breakers and health windows, retry budgets)."""
