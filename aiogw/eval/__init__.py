"""`aiogw eval`: score models on a labelled dataset through the gateway, so that routing,
cost and failover are what is measured; writes the per-item results, a report per model x
task, the cost-vs-quality plot and `quality.json`, the quality router's prior.

dataset (load and check the JSONL) -> runner (send each item, grade it) -> report (aggregate,
write) ; compare (two runs, item by item) ; cli (the subcommands)."""
