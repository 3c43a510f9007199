"""Alerts: events that operators want pushed to them (budget thresholds, SLO breaches,
breakers opening, keys about to expire), each a log line, a metric and a signed webhook."""
