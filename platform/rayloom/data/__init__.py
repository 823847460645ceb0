"""Ray Data pipeline: read -> validate/clean -> dedup -> tokenize -> pack -> shards; streaming to Train.

Entry points: `rayloom.data.pipeline.run_data_job(cfg)` (the `rayloom data` command) and
`rayloom.data.streaming.open_shards(output)` (datasets for Ray Train). The shard contract is in
`rayloom.data.schema`. Importing this package does not import Ray.
"""
