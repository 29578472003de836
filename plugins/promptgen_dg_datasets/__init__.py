"""Built-in plugin: the standard DG datasets (pacs, vlcs, office-home, terra-incognita, domainnet), the generic
`folder` dataset, and `promptgen data info`. Preparing the data: docs/datasets.md."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_datasets(register):
    register("pacs", lazy("promptgen_dg_datasets.catalog:PACS"))
    register("vlcs", lazy("promptgen_dg_datasets.catalog:VLCS"))
    register("office-home", lazy("promptgen_dg_datasets.catalog:OfficeHome"))
    register("terra-incognita", lazy("promptgen_dg_datasets.catalog:TerraIncognita"))
    register("domainnet", lazy("promptgen_dg_datasets.catalog:DomainNet"))
    register("folder", lazy("promptgen_dg_datasets.catalog:FolderDataset"))


@hookimpl
def add_commands(commands):
    from promptgen_dg_datasets.commands import add_data_command

    add_data_command(commands)
