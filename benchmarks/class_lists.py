"""Class lists of standard DG benchmarks, used where realistic prompt lengths matter (the perf suite).

The lists belong to the dataset plugin (promptgen_dg_datasets.class_lists); they are re-exported here.
"""

from promptgen_dg_datasets.class_lists import DOMAINNET, PACS, prompt_name

__all__ = ["DOMAINNET", "PACS", "class_names", "prompt_name"]


def class_names(count: int) -> list[str]:
    """PACS's 7 classes, DomainNet's 345, or the first ``count`` DomainNet classes."""
    if count == len(PACS):
        return list(PACS)
    if not 1 <= count <= len(DOMAINNET):
        raise ValueError(f"between 1 and {len(DOMAINNET)} classes, got {count}")
    return [prompt_name(name) for name in DOMAINNET[:count]]
