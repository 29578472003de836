"""The run engine: a run's config, plan, context and directory, its dry run, and the engine that trains
and scores it."""
