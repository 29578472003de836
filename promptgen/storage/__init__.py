"""Storage: what outlives a run. The LMDB feature cache (format, environment, upkeep, page check); the label store."""
