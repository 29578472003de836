"""Class names: how they are compared across datasets, by a run's plan (the classes two datasets share) and by a
dataset plugin alike."""


def class_key(name: str) -> str:
    """How class names are compared across datasets: case, '_', '-' and repeated spaces ignored."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())
