"""The five standard DG datasets (DomainBed layouts) and the generic `folder` dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

from promptgen.toolkit import ConfigError, DatasetError
from promptgen_dg_datasets import class_lists, splits
from promptgen_dg_datasets.dataset import FolderTreeDataset
from promptgen_dg_datasets.layout import Spec
from promptgen_dg_datasets.listing import subfolders


def _same(*names: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Domains whose folder is named like the domain."""
    return tuple((name, (name,)) for name in names)


class PACS(FolderTreeDataset):
    """PACS: art_painting, cartoon, photo, sketch; 7 classes (DomainBed layout or SPG/CoOp's images/ layout)."""

    spec = Spec(
        name="pacs", title="PACS", dir_names=("PACS", "pacs"),
        domains=_same("art_painting", "cartoon", "photo", "sketch"),
        class_folders=class_lists.PACS,
        # A broken file in the original release; Dassl and SPG skip it too.
        excluded=frozenset({"sketch/dog/n02103406_4068-1.png"}),
    )


class VLCS(FolderTreeDataset):
    """VLCS: Caltech101, LabelMe, SUN09, VOC2007; 5 classes (DomainBed layout)."""

    spec = Spec(name="vlcs", title="VLCS", dir_names=("VLCS", "vlcs"),
                domains=_same("Caltech101", "LabelMe", "SUN09", "VOC2007"), class_folders=class_lists.VLCS)
    # split="official" draws 70/30 here too: SPG's vlcs_coop.py:25-69 takes Dassl's <DOMAIN>/full/ as train and
    # <DOMAIN>/test/ as val, folders the DomainBed layout does not have.


class OfficeHome(FolderTreeDataset):
    """OfficeHome: Art, Clipart, Product, Real World; 65 classes, lower-cased in prompts (DomainBed layout)."""

    spec = Spec(
        name="office-home", title="OfficeHome",
        dir_names=("OfficeHome", "office_home", "OfficeHomeDataset_10072016", "office_home/OfficeHomeDataset_10072016"),
        domains=(("Art", ("Art",)), ("Clipart", ("Clipart",)), ("Product", ("Product",)),
                 ("Real World", ("Real World", "Real_World", "RealWorld"))),
        class_folders=class_lists.OFFICE_HOME, lower_case=True,
    )


class TerraIncognita(FolderTreeDataset):
    """TerraIncognita: camera-trap locations 38, 43, 46, 100; 10 classes (DomainBed layout)."""

    spec = Spec(name="terra-incognita", title="TerraIncognita", dir_names=("terra_incognita", "TerraIncognita"),
                domains=_same("location_38", "location_43", "location_46", "location_100"),
                class_folders=class_lists.TERRA_INCOGNITA)


class DomainNet(FolderTreeDataset):
    """DomainNet: clipart, infograph, painting, quickdraw, real, sketch; 345 classes (DomainBed layout)."""

    spec = Spec(name="domainnet", title="DomainNet", dir_names=("domain_net", "DomainNet", "domainnet"),
                domains=_same("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
                class_folders=class_lists.DOMAINNET)
    official_counts = staticmethod(splits.spg_domainnet)  # 2 % train, 1 % val per class; ~3 % of a target tested


class FolderDataset(FolderTreeDataset):
    """Any DIR/<domain>/<class>/<image> tree: domains and classes are its sorted folder names."""

    empty_class_folder_is_an_error = True  # its folders are its classes: an empty one is a copy that went wrong

    def make_spec(self, root) -> Spec:
        if root is None:
            raise ConfigError("folder: no data root given; pass --data-root DIR, a folder of <domain>/<class>/<image>")
        root = Path(root).expanduser().absolute()
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise DatasetError(f"folder: data root {root} {what}; expected a folder of <domain>/<class>/<image>")
        domains = subfolders(root)
        if not domains:
            raise DatasetError(f"folder: no domain folders in {root}; expected {root}/<domain>/<class>/<image>")
        classes = sorted(set().union(*(subfolders(root / domain) for domain in domains)))
        if not classes:
            raise DatasetError(f"folder: no class folders in any domain of {root}; expected "
                               f"{root}/<domain>/<class>/<image>")
        resolved = root.resolve()
        digest = hashlib.blake2b(str(resolved).encode(), digest_size=4).hexdigest()
        self._root_key = f"{resolved.name}-{digest}"
        return Spec(name="folder", title=f"folder dataset {root}", dir_names=(), domains=_same(*domains),
                    class_folders=tuple(classes))

    def key_prefix(self) -> str:
        # The feature cache knows every folder dataset as 'folder': the root's name and a hash of its absolute
        # path keep two of them apart (two roots may share a name); moving the data re-extracts its features.
        return f"{self._root_key}/"
