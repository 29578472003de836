"""Storage: the LMDB feature cache and its extraction, the prompt-label store, checkpoints and atomic files."""
