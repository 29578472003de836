"""Built-in plugin: the standard DG datasets (pacs, vlcs, office-home, terra-incognita, domainnet), the generic
`folder` dataset, and `promptgen data info`. Preparing the data: docs/datasets.md."""

from promptgen import hookimpl
from promptgen_dg_datasets.catalog import PACS, VLCS, DomainNet, FolderDataset, OfficeHome, TerraIncognita


@hookimpl
def register_datasets(register):
    register("pacs", PACS)
    register("vlcs", VLCS)
    register("office-home", OfficeHome)
    register("terra-incognita", TerraIncognita)
    register("domainnet", DomainNet)
    register("folder", FolderDataset)


@hookimpl
def add_commands(commands):
    from promptgen_dg_datasets.commands import add_data_command

    add_data_command(commands)
