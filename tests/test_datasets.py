"""The DG dataset plugins (pacs, vlcs, office-home, terra-incognita, domainnet, folder) on generated trees.

Every tree is written here, in tmp_path, in the exact layouts of the real datasets (tiny random
images, real file-name shapes); nothing is committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from promptgen.cli import main
from promptgen.errors import ConfigError, DatasetError
from promptgen.runs.plan import shared_classes
from promptgen.components.registry import load_registry
from promptgen_dg_datasets import class_lists, imagecheck

PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_BAD_FILE = "n02103406_4068-1.png"  # sketch/dog: broken in the original release, always left out


# --- building trees --------------------------------------------------------------------------


def image_bytes(name: str, size: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buffer, format="PNG" if name.endswith(".png") else "JPEG")
    return buffer.getvalue()


def build(base: Path, tree: dict[str, dict[str, list[str]]]) -> Path:
    """base/<domain>/<class>/<file> for every file named in ``tree``."""
    for domain, classes in tree.items():
        for cls, names in classes.items():
            folder = base / domain / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, name in enumerate(names):
                (folder / name).write_bytes(image_bytes(name, seed=i))
    return base


def pacs_names(domain: str, n: int = 5) -> list[str]:
    if domain == "photo":
        return [f"n0210340{i}_{1000 + i}.jpg" for i in range(n)]
    if domain == "sketch":
        return [f"n02103406_{2000 + i}-{i % 3 + 1}.png" for i in range(n)]
    return [f"pic_{i + 1:03d}.jpg" for i in range(n)]


def pacs_tree(base: Path, *, skip: tuple[str, str] | None = None) -> Path:
    """PACS's DomainBed layout (5 images per domain and class), plus the known bad file as junk."""
    tree = {d: {c: pacs_names(d) for c in class_lists.PACS if (d, c) != skip} for d in PACS_DOMAINS}
    build(base, tree)
    (base / "sketch" / "dog" / PACS_BAD_FILE).write_bytes(b"broken")
    return base


def write_split(path: Path, train: list, val: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": train, "val": val}))
    return path


def entry(path: str, cls: str, domain_index: int = 0) -> list:
    return [path, class_lists.PACS.index(cls), domain_index, cls]


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache per test: splits and image checks of one test never leak into another."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PROMPTGEN_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def create(registry):
    def build_dataset(name: str, root, **options):
        return registry.create("dataset", name, root=None if root is None else str(root), progress=False, **options)

    return build_dataset


@pytest.fixture(scope="module")
def pacs_root(tmp_path_factory) -> Path:
    return pacs_tree(tmp_path_factory.mktemp("data") / "PACS")


@pytest.fixture(scope="module")
def domainnet_root(tmp_path_factory) -> Path:
    """DomainNet: every one of the 345 classes in every domain (one image; five of aircraft_carrier)."""
    base = tmp_path_factory.mktemp("dn") / "domain_net"
    domains = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    build(base, {d: {c: [f"{d}_{k:03d}_{1 + j:06d}.jpg" for j in range(5 if c == "aircraft_carrier" else 1)]
                     for k, c in enumerate(class_lists.DOMAINNET)} for d in domains})
    return base


@pytest.fixture(scope="module")
def office_home_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("oh") / "OfficeHome"
    build(base, {d: {c: [f"{k:05d}.jpg" for k in range(1, 3)] for c in class_lists.OFFICE_HOME}
                 for d in ("Art", "Clipart", "Product", "Real World")})
    return base


@pytest.fixture(scope="module")
def vlcs_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("vlcs") / "VLCS"
    build(base, {d: {c: [hashlib.md5(f"{d}{c}{i}".encode()).hexdigest() + ".jpg" for i in range(3)]
                     for c in class_lists.VLCS} for d in ("Caltech101", "LabelMe", "SUN09", "VOC2007")})
    return base


@pytest.fixture(scope="module")
def terra_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("terra") / "terra_incognita"
    build(base, {f"location_{n}": {c: [f"{uuid.UUID(int=n * 1000 + i)}.jpg" for i in range(2)]
                                   for c in class_lists.TERRA_INCOGNITA} for n in (100, 38, 43, 46)})
    return base


# --- the five datasets ---------------------------------------------------------------------


def test_pacs_domainbed_layout_from_the_folder_or_its_parent(create, pacs_root, cache):
    dataset = create("pacs", pacs_root)
    assert dataset.domains == PACS_DOMAINS
    assert dataset.classes == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    for domain in PACS_DOMAINS:
        train, val, test = (dataset.samples(domain, s) for s in ("train", "val", "test"))
        assert (len(train), len(val), len(test)) == (28, 7, 35)  # stratified: 1 of 5 per class in val
        assert sorted(s.key for s in train + val) == sorted(s.key for s in test)
    giraffe = [s for s in dataset.samples("art_painting", "test") if "/giraffe/" in s.key]
    assert {s.label for s in giraffe} == {2}
    assert giraffe[0].key == "art_painting/giraffe/pic_001.jpg"
    assert giraffe[0].source == str(pacs_root / "art_painting" / "giraffe" / "pic_001.jpg")
    # The known broken sketch is never listed (nor scanned: it holds junk bytes, and no error is raised).
    assert not any(PACS_BAD_FILE in s.key for s in dataset.samples("sketch", "test"))
    from_parent = create("pacs", pacs_root.parent)
    assert [s.key for s in from_parent.samples("photo", "val")] == [s.key for s in dataset.samples("photo", "val")]
    image = dataset.load_image(dataset.samples("sketch", "test")[0])
    assert image.mode == "RGB" and image.size == (8, 8)


def test_seeded_split_is_written_reused_and_depends_on_the_seed(create, pacs_root, cache):
    dataset = create("pacs", pacs_root)
    val = [s.key for s in dataset.samples("photo", "val")]
    source = dataset.info()["split_source"]["photo"]
    assert source.startswith(f"seeded: {cache / 'splits' / 'pacs'}")
    document = json.loads(Path(source.removeprefix("seeded: ")).read_text())
    assert len(document["train"]) == 28 and len(document["val"]) == 7
    path, label, domain_index, name = document["val"][0]
    assert path.startswith("photo/") and domain_index == 2 and class_lists.PACS[label] == name
    # reused: the same file, and the same samples
    again = create("pacs", pacs_root)
    assert again.info()["split_source"]["photo"] == source
    assert [s.key for s in again.samples("photo", "val")] == val
    other = create("pacs", pacs_root, seed=1)
    assert [s.key for s in other.samples("photo", "val")] != val
    assert len(create("pacs", pacs_root, val_fraction=0.4).samples("photo", "val")) == 14


def test_pacs_images_layout_with_official_split_files(create, tmp_path):
    root = tmp_path / "data"
    pacs_tree(root / "PACS" / "images")
    splits = root / "PACS" / "spg_coop_splits"
    for index, domain in enumerate(PACS_DOMAINS):
        names = pacs_names(domain)
        train = [entry(f"PACS/images/{domain}/{c}/{n}", c, index) for c in class_lists.PACS for n in names[:3]]
        val = [entry(f"PACS/images/{domain}/{c}/{n}", c, index) for c in class_lists.PACS for n in names[3:]]
        if domain == "sketch":  # SPG's files list the broken image; it is skipped, as SPG does
            train.append(entry(f"PACS/images/sketch/dog/{PACS_BAD_FILE}", "dog", index))
        # SPG names the files by initial (a_, c_, p_); the full domain name works too.
        write_split(splits / f"{domain if domain == 'sketch' else domain[0]}_train_val_split.json", train, val)
    # a seed's own folder wins for that seed
    names = pacs_names("art_painting")
    write_split(splits / "1" / "a_train_val_split.json",
                [entry(f"art_painting/{c}/{n}", c) for c in class_lists.PACS for n in names[:4]],
                [entry(f"art_painting/{c}/{names[4]}", c) for c in class_lists.PACS])
    info = create("pacs", root).info()
    assert info["splits"]["sketch"] == {"train": 21, "val": 14, "test": 35}
    assert info["splits"]["art_painting"] == {"train": 21, "val": 14, "test": 35}
    assert info["split_source"]["sketch"] == f"official: {splits / 'sketch_train_val_split.json'}"
    assert info["split_source"]["photo"] == f"official: {splits / 'p_train_val_split.json'}"
    assert info["problems"] == []
    seeded_one = create("pacs", root, seed=1).info()
    assert seeded_one["splits"]["art_painting"] == {"train": 28, "val": 7, "test": 35}
    assert seeded_one["split_source"]["art_painting"] == f"official: {splits / '1' / 'a_train_val_split.json'}"


def test_vlcs(create, vlcs_root):
    dataset = create("vlcs", vlcs_root.parent)
    assert dataset.domains == ("Caltech101", "LabelMe", "SUN09", "VOC2007")
    assert dataset.classes == ("bird", "car", "chair", "dog", "person")
    chairs = [s for s in dataset.samples("SUN09", "test") if "/chair/" in s.key]
    assert len(chairs) == 3 and {s.label for s in chairs} == {2}


@pytest.mark.parametrize("real_world", ["Real World", "Real_World"])
def test_office_home_real_world_folder_names(create, office_home_root, tmp_path, real_world):
    root = office_home_root
    if real_world != "Real World":  # the same tree under DomainBed's download names
        root = tmp_path / "office_home" / "OfficeHomeDataset_10072016"
        root.mkdir(parents=True)
        for domain in ("Art", "Clipart", "Product", "Real World"):
            (root / domain.replace(" ", "_")).symlink_to(office_home_root / domain)
        root = tmp_path
    dataset = create("office-home", root)
    assert dataset.domains == ("Art", "Clipart", "Product", "Real World")
    assert len(dataset.classes) == 65 and dataset.classes[:3] == ("alarm clock", "backpack", "batteries")
    assert dataset.classes[58:62] == ("tv", "table", "telephone", "toothbrush")  # ImageFolder's order: "TV" < "Table"
    sample = dataset.samples("Real World", "test")[0]
    assert sample.key == "Real World/Alarm_Clock/00001.jpg" and sample.label == 0
    assert len(dataset.samples("Real World", "test")) == 130


def test_terra_incognita_domains_in_numeric_order(create, terra_root):
    dataset = create("terra-incognita", terra_root)
    assert dataset.domains == ("location_38", "location_43", "location_46", "location_100")
    assert dataset.classes == class_lists.TERRA_INCOGNITA
    empty = [s for s in dataset.samples("location_100", "test") if "/empty/" in s.key]
    assert len(empty) == 2 and {s.label for s in empty} == {5}


def test_domainnet_and_the_classes_it_shares(create, domainnet_root, pacs_root, vlcs_root, office_home_root,
                                             terra_root):
    domainnet = create("domainnet", domainnet_root.parent, check_images=False)
    assert domainnet.domains == ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    assert len(domainnet.classes) == 345
    assert domainnet.classes[:4] == ("The Eiffel Tower", "The Great Wall of China", "The Mona Lisa", "aircraft carrier")
    assert {"t-shirt", "teddy-bear", "alarm clock"} <= set(domainnet.classes)
    carriers = [s for s in domainnet.samples("quickdraw", "test") if "/aircraft_carrier/" in s.key]
    assert len(carriers) == 5 and {s.label for s in carriers} == {3}
    assert len(domainnet.samples("real", "val")) == 1  # one-image classes stay in train
    shared = {
        "pacs": ("dog", "elephant", "giraffe", "guitar", "horse", "house"),
        "vlcs": ("bird", "car", "chair", "dog"),
        "terra-incognita": ("bird", "cat", "dog", "rabbit", "raccoon", "squirrel"),
    }
    roots = {"pacs": pacs_root, "vlcs": vlcs_root, "terra-incognita": terra_root, "office-home": office_home_root}
    for name, root in roots.items():
        target = create(name, root, check_images=False)
        found = shared_classes(domainnet.classes, target.classes)
        if name == "office-home":
            assert len(found) == 31 and {"alarm clock", "paper clip", "toothbrush", "mug"} <= set(found)
            assert "tv" not in found and "flipflops" not in found  # DomainNet says television, flip flops
        else:
            assert found == shared[name]


def test_folder_dataset(create, tmp_path):
    root = build(tmp_path / "my_shapes", {
        "real_world": {"cat": ["a.jpg", "b.jpg"], "traffic_light": ["c.png"], "dog": ["d.jpg"]},
        "sketch_art": {"cat": ["e.jpg"], "traffic_light": ["f.png", "g.png"]},
    })
    (root / "notes.txt").write_text("not a domain")
    dataset = create("folder", root)
    info = dataset.info()
    assert dataset.domains == ("real_world", "sketch_art")
    assert dataset.classes == ("cat", "dog", "traffic light")
    assert info["splits"]["sketch_art"]["test"] == 3
    keys = [s.key for s in dataset.samples("sketch_art", "test")]
    prefix = keys[0].split("/")[0]  # the root's name and a hash of its path: two 'my_shapes' folders stay apart
    assert re.fullmatch(r"my_shapes-[0-9a-f]{8}", prefix)
    assert keys == [f"{prefix}/sketch_art/cat/e.jpg", f"{prefix}/sketch_art/traffic_light/f.png",
                    f"{prefix}/sketch_art/traffic_light/g.png"]
    assert [s.label for s in dataset.samples("sketch_art", "test")] == [0, 2, 2]
    assert "images per domain: real_world 1, sketch_art 0" in info["problems"][0]


# --- promptgen data info ---------------------------------------------------------------------


def test_data_info_text_and_json(pacs_root, capsys):
    assert main(["data", "info", "--dataset", "pacs", "--data-root", str(pacs_root)]) == 0
    out = capsys.readouterr().out
    assert f"dataset: pacs ({pacs_root})" in out
    assert "domains (4): art_painting, cartoon, photo, sketch" in out
    assert "classes (7): dog, elephant, giraffe, guitar, horse, house, person" in out
    row = next(line for line in out.splitlines() if line.startswith("photo "))
    assert row.split()[1:5] == ["28", "7", "35", "seeded:"]
    assert "problems: none" in out and "split: files" in out
    assert main(["data", "info", "--dataset", "pacs", "--data-root", str(pacs_root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"domains", "classes", "split", "splits", "split_source", "problems"}
    assert info["split"] == "files"
    assert info["splits"]["sketch"] == {"train": 28, "val": 7, "test": 35}
    assert info["split_source"]["sketch"].startswith("seeded: ")


def test_data_info_reports_problems_and_errors(tmp_path, capsys):
    root = pacs_tree(tmp_path / "PACS", skip=("cartoon", "giraffe"))
    assert main(["data", "info", "--dataset", "pacs", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "problems (1):" in out and "class 'giraffe' has no images in domain 'cartoon'" in out
    assert main(["data", "info", "--dataset", "pacs", "--data-root", str(tmp_path / "missing")]) == 2
    assert f"promptgen: error: pacs: data root {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_data_info_works_for_any_dataset_plugin(capsys):
    assert main(["data", "info", "--dataset", "colors", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["split_source"] == {d: "plugin" for d in info["domains"]}


# --- bad input -------------------------------------------------------------------------------


def test_missing_root(create, tmp_path, cache):
    with pytest.raises(ConfigError, match="pacs: no data root given; pass --data-root DIR"):
        create("pacs", None)
    with pytest.raises(DatasetError, match=f"data root {tmp_path / 'nope'} does not exist; expected the PACS folder"):
        create("pacs", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no PACS domain folders under .*empty; expected .*<domain>/<class>/<image>"):
        create("pacs", tmp_path / "empty")
    assert files_in(cache) == []


def test_missing_domain_folder(create, tmp_path, cache):
    root = build(tmp_path / "PACS", {d: {"dog": ["pic_001.jpg"]} for d in PACS_DOMAINS[:3]})
    with pytest.raises(DatasetError) as error:
        create("pacs", root)
    assert str(error.value) == (f"pacs: domain folder missing in {root}: 'sketch' (expected {root / 'sketch'}, "
                                f"holding <class>/<image>)")
    assert files_in(cache) == []


def test_class_missing_in_one_domain_warns_but_a_split_file_naming_it_fails(create, tmp_path, cache, caplog):
    root = pacs_tree(tmp_path / "PACS", skip=("cartoon", "giraffe"))
    for _ in range(2):  # a sweep builds a dataset more than once: one line, once
        problems = create("pacs", root).problems
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "1 (class, domain) pair(s) have no images" in warned[0]
    assert "class 'giraffe' has no images in domain 'cartoon'" in warned[0] and "promptgen data info" in warned[0]
    assert problems == (f"class 'giraffe' has no images in domain 'cartoon' ({root / 'cartoon' / 'giraffe'}); "
                        f"images per domain: art_painting 5, cartoon 0, photo 5, sketch 5",)
    split = write_split(root / "spg_coop_splits" / "cartoon_train_val_split.json",
                        [entry("cartoon/giraffe/pic_001.jpg", "giraffe", 1)], [])
    with pytest.raises(DatasetError) as error:
        create("pacs", root).samples("cartoon", "train")
    assert str(error.value).startswith(f"split file {split}: 1 bad entry:")
    assert ("'cartoon/giraffe/pic_001.jpg': class 'giraffe' has no images in domain 'cartoon' "
            f"(no folder {root / 'cartoon' / 'giraffe'} with images)") in str(error.value)


def make_bad_images(root: Path) -> list[Path]:
    """A junk file, a PNG and a JPEG cut in half: every kind of broken image."""
    junk = root / "photo" / "dog" / "n02103406_9999.jpg"
    junk.write_bytes(b"this is not an image")
    png = root / "sketch" / "horse" / "n02374451_1.png"
    png.write_bytes(image_bytes("x.png", size=64)[:300])
    jpeg = root / "art_painting" / "house" / "pic_999.jpg"
    data = image_bytes("x.jpg", size=64)
    jpeg.write_bytes(data[: len(data) * 2 // 3])
    return [junk, png, jpeg]


def test_bad_images_fail_lists_every_one_and_writes_nothing(create, tmp_path, cache):
    root = pacs_tree(tmp_path / "PACS")
    bad = make_bad_images(root)
    with pytest.raises(DatasetError) as error:
        create("pacs", root).samples("photo", "train")
    message = str(error.value)
    assert message.startswith(f"pacs: 3 unreadable or truncated image(s) under {root}; replace or remove them, "
                              f"or leave them out with bad_images='skip'")
    for path in bad:
        assert f"\n  {path}: " in message
    assert "truncated" in message  # PIL's own words for the cut JPEG/PNG
    assert files_in(cache) == []


def test_bad_images_skip_leaves_them_out_and_lists_them(create, tmp_path, cache):
    root = pacs_tree(tmp_path / "PACS")
    bad = make_bad_images(root)
    dataset = create("pacs", root, bad_images="skip")
    assert len(dataset.samples("photo", "test")) == 35
    assert not {str(p) for p in bad} & {s.source for d in PACS_DOMAINS for s in dataset.samples(d, "test")}
    assert [p.split(" (")[0] for p in dataset.problems] == [f"unreadable image left out: {p}" for p in sorted(
        bad, key=lambda p: PACS_DOMAINS.index(p.parent.parent.name))]
    assert len(files_in(cache / "image-checks")) == 1 and len(files_in(cache / "splits" / "pacs")) == 4


def test_image_check_is_cached_until_a_file_changes(create, tmp_path, cache, monkeypatch):
    root = pacs_tree(tmp_path / "PACS")
    create("pacs", root).samples("photo", "train")
    checked = []
    original = imagecheck.check_image
    monkeypatch.setattr(imagecheck, "check_image", lambda path: checked.append(path) or original(path))
    create("pacs", root).samples("photo", "train")
    assert checked == []  # the cached result was used
    (root / "photo" / "dog" / pacs_names("photo")[0]).write_bytes(image_bytes("x.jpg", size=12))
    create("pacs", root).samples("photo", "train")
    assert len(checked) == 4 * 35  # any change: the whole dataset is checked again


def test_the_image_scan_in_worker_processes_finds_what_the_serial_scan_finds(tmp_path, cache, monkeypatch):
    root = pacs_tree(tmp_path / "PACS")
    make_bad_images(root)
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file())
    serial, _, _ = imagecheck.find_bad_images("pacs", paths, progress=False)
    monkeypatch.setattr(imagecheck, "PARALLEL_FROM", 1)  # a large dataset: both cores
    parallel, _, _ = imagecheck.find_bad_images("pacs", paths, progress=False)
    assert parallel == serial and len(serial) >= 2


def test_check_images_false_skips_the_scan(create, tmp_path, cache):
    root = pacs_tree(tmp_path / "PACS")
    junk = make_bad_images(root)[0]
    dataset = create("pacs", root, check_images=False)
    sample = next(s for s in dataset.samples("photo", "test") if s.source == str(junk))
    with pytest.raises(DatasetError, match=f"pacs: cannot load image {junk}: cannot identify image file"):
        dataset.load_image(sample)
    assert files_in(cache / "image-checks") == []


def test_valid_jpeg_with_trailing_bytes_is_not_flagged(tmp_path):
    path = tmp_path / "pic_001.jpg"
    path.write_bytes(image_bytes("x.jpg", size=32) + b"trailing bytes some cameras add")
    assert imagecheck.check_image(str(path)) is None


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"train": []}', "expected a JSON object with lists 'train' and 'val' of "
                      "[relative image path, label, domain index, class name], got ['train']"),
    ('[["photo/dog/a.jpg", 0, 2, "dog"]]', "expected a JSON object with lists 'train' and 'val'"),
    ('{"train": [["photo/dog/a.jpg", "0", 2, "dog"]], "val": []}',
     'train[0] should be [relative image path, label, domain index, class name], '
     'got ["photo/dog/a.jpg", "0", 2, "dog"]'),
    ('{"train": [], "val": [["photo/dog/a.jpg", 0, 2]]}', "val[0] should be"),
])
def test_split_file_with_a_wrong_schema(create, pacs_root, tmp_path, cache, content, message):
    root = tmp_path / "PACS"
    root.mkdir()
    for domain in PACS_DOMAINS:
        (root / domain).symlink_to(pacs_root / domain)
    split = root / "spg_coop_splits" / "photo_train_val_split.json"
    split.parent.mkdir()
    split.write_text(content)
    with pytest.raises(DatasetError) as error:
        create("pacs", root).samples("photo", "train")
    assert str(error.value).startswith(f"split file {split}: ")
    assert message in str(error.value)
    assert files_in(cache) == []


def test_split_file_entries_are_checked(create, pacs_root, tmp_path, cache):
    root = tmp_path / "PACS"
    root.mkdir()
    for domain in PACS_DOMAINS:
        (root / domain).symlink_to(pacs_root / domain)
    photo = pacs_names("photo")
    split = write_split(root / "spg_coop_splits" / "photo_train_val_split.json", [
        entry(f"photo/dog/{photo[0]}", "dog", 2),
        entry("photo/dog/missing.jpg", "dog", 2),
        entry(f"photo/dog/{photo[1]}", "horse", 2),
        [f"photo/cat/{photo[2]}", 7, 2, "zebra"],
        entry(f"art_painting/dog/{pacs_names('art_painting')[0]}", "dog", 2),
        [f"photo/elephant/{photo[3]}", 0, 2, "elephant"],
        [f"photo/dog/{photo[4]}", 3, 2, "dog"],
    ], [entry(f"photo/dog/{photo[0]}", "dog", 2)])
    with pytest.raises(DatasetError) as error:
        create("pacs", root).samples("photo", "train")
    lines = str(error.value).splitlines()
    assert lines[0] == f"split file {split}: 7 bad entries:"
    assert lines[1:] == [
        f"  train[1] 'photo/dog/missing.jpg': no such image of domain 'photo' under {root}",
        f"  train[2] 'photo/dog/{photo[1]}': labelled 'horse' but lies in class folder 'dog'",
        f"  train[3] 'photo/cat/{photo[2]}': unknown class name 'zebra'",
        "  train[4] 'art_painting/dog/pic_001.jpg': an image of domain 'art_painting', not 'photo'",
        f"  train[5] 'photo/elephant/{photo[3]}': label 0 is used for class 'dog' and for 'elephant'",
        f"  train[6] 'photo/dog/{photo[4]}': class 'dog' has label 0 elsewhere and 3 here",
        f"  val[0] 'photo/dog/{photo[0]}': the same image is already in train[0]",
    ]
    assert files_in(cache) == []


def test_empty_domain(create, tmp_path, cache):
    root = build(tmp_path / "PACS", {d: {"dog": ["pic_001.jpg"]} for d in PACS_DOMAINS if d != "photo"})
    (root / "photo" / "dog").mkdir(parents=True)
    (root / "photo" / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError) as error:
        create("pacs", root, check_images=False).samples("sketch", "test")
    assert str(error.value).startswith(f"pacs: domain 'photo' has no images: {root / 'photo'} holds no "
                                       f"<class>/<image> files (.bmp, .gif, .jpeg, .jpg,")
    assert files_in(cache) == []


@pytest.mark.parametrize("options, message", [
    ({"val_fraction": 1.5}, "dataset 'pacs' (plugin dg_datasets): option 'val_fraction' must be < 1, got 1.5"),
    ({"bad_images": "ignore"}, "dataset 'pacs' (plugin dg_datasets): option 'bad_images' must be one of 'fail', "
                               "'skip', got 'ignore'"),
    ({"colour": "red"}, "pacs: unknown option(s) colour; options: seed, split, val_fraction, bad_images"),
    ({"split": "offical"}, "dataset 'pacs' (plugin dg_datasets): option 'split' must be one of 'files', 'official', "
                           "got 'offical'; did you mean 'official'?"),
    ({"seed": "1"}, "dataset 'pacs' (plugin dg_datasets): option 'seed' must be int, got '1'"),
])
def test_bad_options(create, pacs_root, options, message):
    with pytest.raises(ConfigError) as error:
        create("pacs", pacs_root, **options)
    assert str(error.value).startswith(message)


def test_datasets_with_fixed_classes_declare_them_without_data(registry, domainnet_root, create):
    """The perf suite reads realistic class names from a dataset class, before any data exists."""
    from benchmarks import perf

    factory = registry.get("dataset", "domainnet").factory
    assert len(factory.classes) == 345 and factory.classes == create("domainnet", domainnet_root).classes
    assert registry.get("dataset", "pacs").factory.classes == tuple(sorted(class_lists.PACS))
    assert perf.class_names({"class_names_from": "domainnet"}, 3) == list(factory.classes[:3])
    assert class_lists.prompt_name("The_Eiffel_Tower") == "The Eiffel Tower"


def test_splits_and_image_checks_go_under_the_runs_cache_dir(create, pacs_root, cache, tmp_path):
    """--cache-dir is where a run keeps everything it generates: seeded splits and image-scan results too."""
    other = tmp_path / "elsewhere"
    create("pacs", pacs_root, cache_dir=str(other)).samples("photo", "train")
    assert files_in(other / "splits") and files_in(other / "image-checks")
    assert not files_in(cache / "splits") and not files_in(cache / "image-checks")


def test_a_run_hands_its_cache_dir_to_the_dataset(pacs_root, cache, tmp_path):
    from promptgen.runs.config import RunConfig
    from promptgen.runs.engine import build_dataset

    other = tmp_path / "run-cache"
    config = RunConfig(targets="photo", dataset="pacs", data_root=str(pacs_root), cache_dir=str(other))
    build_dataset(config, load_registry(), "pacs", "cpu", progress=False).samples("photo", "train")
    assert files_in(other / "splits") and not files_in(cache / "splits")


# --- split = "official": the released SPG code's split_data and test sets (docs/parity.md row 10) ---------


def split_keys(dataset, domain: str) -> dict[str, list[str]]:
    return {part: [s.key for s in dataset.samples(domain, part)] for part in ("train", "val", "test")}


def per_class(keys: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key.split("/")[1]] = counts.get(key.split("/")[1], 0) + 1
    return counts


def test_official_split_is_70_30_per_class_seeded_and_written(create, tmp_path, cache):
    # pacs_coop.py:29 n_train = round(n * 0.7): Python's round of the float product, half to even
    sizes = {"dog": 5, "elephant": 15, "giraffe": 25, "guitar": 35, "horse": 7, "house": 2, "person": 1}
    n_train = {"dog": 4, "elephant": 10, "giraffe": 18, "guitar": 24, "horse": 5, "house": 1, "person": 1}
    root = build(tmp_path / "PACS", {d: {c: pacs_names(d, n) for c, n in sizes.items()} for d in PACS_DOMAINS})
    dataset = create("pacs", root, split="official", check_images=False)
    for domain in PACS_DOMAINS:
        keys = split_keys(dataset, domain)
        assert per_class(keys["train"]) == n_train
        assert per_class(keys["val"]) == {c: sizes[c] - n_train[c] for c in sizes if sizes[c] > n_train[c]}
        assert not set(keys["train"]) & set(keys["val"])
        assert sorted(keys["train"] + keys["val"]) == sorted(keys["test"])  # test: the whole domain
        assert len(keys["test"]) == sum(sizes.values())
    info = dataset.info()
    assert info["split"] == "official" and info["problems"] == []
    source = info["split_source"]["photo"]
    assert source.startswith(f"official procedure, seeded: {cache / 'splits' / 'pacs' / 'photo_official_seed0_'}")
    document = json.loads(Path(source.split(": ", 1)[1]).read_text())
    assert document["meta"]["split"] == "official" and document["meta"]["counts"] == "spg_70_30"
    photo = split_keys(dataset, "photo")
    assert sorted(path for path, *_ in document["train"]) == photo["train"]  # relative to the domains' folder
    # seeded: the same seed draws the same split again (the written file removed), another seed another one
    for path in files_in(cache / "splits"):
        path.unlink()
    assert split_keys(create("pacs", root, split="official", check_images=False), "photo") == photo
    other = split_keys(create("pacs", root, split="official", seed=1, check_images=False), "photo")
    assert other["train"] != photo["train"] and per_class(other["train"]) == n_train


def test_official_split_of_domainnet_and_its_test_subset(create, tmp_path):
    """domainnet_coop.py:30-31,44-45: ceil(2 %) train and the next ceil(1 %) val per class; spg_domainnet.py:75-79:
    a domain's test is its own train + val, so about 3 % of a target is tested."""
    domains = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    big = {"airplane": 150, "alarm_clock": 201, "ambulance": 250}  # in 'real'; every other class has one image
    blob = image_bytes("x.jpg")
    for domain in domains:
        for k, cls in enumerate(class_lists.DOMAINNET):
            folder = tmp_path / "domainnet" / domain / cls
            folder.mkdir(parents=True)
            for j in range(big.get(cls, 1) if domain == "real" else 1):
                (folder / f"{domain}_{k:03d}_{j + 1:06d}.jpg").write_bytes(blob)
    official = create("domainnet", tmp_path, split="official", check_images=False)
    real = split_keys(official, "real")
    # 150: 3 + 2, 201: ceil(4.02) = 5 + ceil(2.01) = 3, 250: 5 + ceil(2.5) = 3; one image: 1 + 0
    assert {c: n for c, n in per_class(real["train"]).items() if c in big} == {"airplane": 3, "alarm_clock": 5,
                                                                              "ambulance": 5}
    assert per_class(real["val"]) == {"airplane": 2, "alarm_clock": 3, "ambulance": 3}
    assert (len(real["train"]), len(real["val"]), len(real["test"])) == (342 + 13, 8, 342 + 21)
    assert not set(real["train"]) & set(real["val"]) and sorted(real["train"] + real["val"]) == sorted(real["test"])
    assert official.info()["splits"]["sketch"] == {"train": 345, "val": 0, "test": 345}
    # the tested images are those of the whole domain's samples: the same keys (and cache identities)
    whole = create("domainnet", tmp_path, check_images=False).samples("real", "test")
    assert len(whole) == 342 + 601 and set(official.samples("real", "test")) < set(whole)


def test_official_reads_split_files_and_tests_their_train_and_val(create, tmp_path):
    """As spg_*.py do: the released files when present, and the target tested on their train + val."""
    root = pacs_tree(tmp_path / "PACS")
    names = pacs_names("photo")
    write_split(root / "spg_coop_splits" / "p_train_val_split.json",
                [entry(f"PACS/images/photo/{c}/{n}", c, 2) for c in class_lists.PACS for n in names[:2]],
                [entry(f"PACS/images/photo/{c}/{names[2]}", c, 2) for c in class_lists.PACS])
    official = create("pacs", root, split="official").info()
    assert official["splits"]["photo"] == {"train": 14, "val": 7, "test": 21}
    assert official["split_source"]["photo"].startswith("official: ") and official["problems"] == []
    files = create("pacs", root).info()
    assert files["splits"]["photo"] == {"train": 14, "val": 7, "test": 35}
    assert files["problems"] == [f"14 images of domain 'photo' are in neither train nor val of "
                                 f"{root / 'spg_coop_splits' / 'p_train_val_split.json'} (they are in test)"]


def test_data_info_split_option(pacs_root, capsys):
    assert main(["data", "info", "--dataset", "pacs", "--data-root", str(pacs_root), "--split", "official",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["split"] == "official" and info["splits"]["cartoon"] == {"train": 28, "val": 7, "test": 35}
    assert info["split_source"]["cartoon"].startswith("official procedure, seeded: ")
    assert main(["data", "info", "--dataset", "pacs", "--data-root", str(pacs_root), "--split", "offical"]) == 2
    assert ("dataset 'pacs' (plugin dg_datasets): option 'split' must be one of 'files', 'official', got 'offical'; "
            "did you mean 'official'?" in capsys.readouterr().err)


@pytest.mark.parametrize("name", ["pacs", "vlcs", "office-home", "terra-incognita", "domainnet", "folder"])
def test_the_gpu_preset_runs_the_official_split(registry, name):
    from promptgen.components.resolve import Settings, set_options

    assert set_options(registry, "dataset", name, Settings("gpu", name, {})) == {"split": "official"}
    assert set_options(registry, "dataset", name, Settings("cpu", name, {})) == {"split": "files"}
    assert set_options(registry, "dataset", name, Settings("gpu", name, {name: {"split": "files"}})) == {"split": "files"}


def test_a_gpu_run_builds_its_dataset_with_the_official_split(pacs_root):
    from promptgen.runs.config import RunConfig
    from promptgen.runs.engine import build_dataset

    config = RunConfig(targets="photo", dataset="pacs", data_root=str(pacs_root))
    assert build_dataset(config, load_registry(), "pacs", "gpu", progress=False).options.split == "official"
    assert build_dataset(config, load_registry(), "pacs", "cpu", progress=False).options.split == "files"
