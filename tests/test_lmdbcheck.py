"""The page check run before LMDB maps a file: a sound file passes whole, each kind of damage is named, and salvage
returns exactly the entries that sound pages still reach."""

from __future__ import annotations

import random
import struct

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptgen.storage import lmdbcheck
from promptgen.storage.lmdbcheck import HEADER, NODE, P_BRANCH, P_LEAF, PAGE_HEADER, PGNO

_RANDOM = random.Random(0)
# Enough small entries for several leaf pages under a branch root, and values too big for a page (overflow runs).
ENTRIES = {f"key{i:04d}".encode(): _RANDOM.randbytes(20 + i % 60) for i in range(600)}
ENTRIES.update({f"big{i}".encode(): _RANDOM.randbytes(9000 + 100 * i) for i in range(3)})


def write_lmdb(folder, entries=ENTRIES):
    env = lmdb.open(str(folder), subdir=True, map_size=16 * 2**20, max_dbs=0)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()
    return folder / "data.mdb"


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> bytes:
    """The bytes of a sound LMDB file holding ENTRIES."""
    return write_lmdb(tmp_path_factory.mktemp("sound")).read_bytes()


def nodes(pages: lmdbcheck.Pages, number: int) -> list[int]:
    """The byte offsets (within the file) of page ``number``'s nodes."""
    page = pages.page(number)
    lower = HEADER.unpack_from(page)[3]
    at = number * pages.page_size
    return [at + struct.unpack_from("<H", page, PAGE_HEADER + 2 * i)[0] for i in range((lower - PAGE_HEADER) // 2)]


def layout(data: bytes, tmp_path):
    """(pages, the main tree's root, its leaf pages, the first overflow run's page), read from a sound file."""
    path = tmp_path / "layout.mdb"
    path.write_bytes(data)
    pages = lmdbcheck.Pages(path)
    root = pages.roots[1]
    leaves, overflow, stack = [], None, [root]
    while stack:
        number = stack.pop()
        flags = HEADER.unpack_from(pages.page(number))[2]
        for offset in nodes(pages, number):
            lo, hi, node_flags, key_size = NODE.unpack_from(pages.data, offset)
            if flags & P_BRANCH:
                stack.append(lo | hi << 16 | node_flags << 32)
            elif node_flags & lmdbcheck.F_BIGDATA and overflow is None:
                overflow = PGNO.unpack_from(pages.data, offset + NODE.size + key_size)[0]
        if flags & P_LEAF:
            leaves.append(number)
    return pages, root, sorted(leaves), overflow


def damaged_copy(data: bytes, tmp_path, changes: dict[int, bytes], length: int | None = None):
    """A copy of ``data`` with bytes replaced at the given offsets (and cut to ``length``), as a file."""
    copy = bytearray(data if length is None else data[:length])
    for offset, replacement in changes.items():
        copy[offset:offset + len(replacement)] = replacement
    path = tmp_path / "damaged" / "data.mdb"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(bytes(copy))
    return path


def test_a_sound_file_passes_and_salvage_returns_every_entry(sound, tmp_path):
    pages, root, leaves, overflow = layout(sound, tmp_path)
    # what the rest of this file relies on: the tree has a branch root, leaves and overflow runs to damage
    assert HEADER.unpack_from(pages.page(root))[2] & P_BRANCH and len(leaves) > 3 and overflow is not None
    path = damaged_copy(sound, tmp_path, {})
    assert lmdbcheck.problem(path) is None
    assert dict(lmdbcheck.salvage(path)) == ENTRIES


def test_a_missing_or_empty_file_is_no_problem(tmp_path):
    assert lmdbcheck.problem(tmp_path / "data.mdb") is None  # LMDB creates it
    (tmp_path / "data.mdb").write_bytes(b"")
    assert lmdbcheck.problem(tmp_path / "data.mdb") is None  # LMDB is creating it; the cache judges an emptied one


def test_an_empty_database_passes_and_salvages_nothing(tmp_path):
    path = write_lmdb(tmp_path, {})
    assert lmdbcheck.problem(path) is None
    assert list(lmdbcheck.salvage(path)) == []


def _leaf_node(pages, leaves, inline: bool) -> int:
    """The file offset of a node in a leaf page whose value is inline (or, not inline, in an overflow run)."""
    for leaf in leaves:
        for offset in nodes(pages, leaf):
            if bool(NODE.unpack_from(pages.data, offset)[2] & lmdbcheck.F_BIGDATA) != inline:
                return offset
    raise AssertionError("no such node")


def _damage(kind: str, pages, root, leaves, overflow) -> tuple[dict[int, bytes], int | None]:
    size, leaf = pages.page_size, leaves[len(leaves) // 2]
    first_child = nodes(pages, root)[0]
    if kind == "too short":
        return {}, 100
    if kind == "truncated":
        return {}, len(pages.data) - size
    if kind == "first meta page":
        return {0: bytes(64)}, None
    if kind == "both meta pages":
        return {0: bytes(64), size: bytes(64)}, None
    if kind == "child outside the file":
        return {first_child: struct.pack("<HH", 0xFFFF, 0x7FFF)}, None
    if kind == "loop":  # the root's first child is the root itself
        return {first_child: struct.pack("<HHH", root & 0xFFFF, root >> 16 & 0xFFFF, root >> 32)}, None
    if kind == "page says another number":
        return {leaf * size: PGNO.pack(leaf + 1)}, None
    if kind == "impossible bounds":
        return {leaf * size + 12: struct.pack("<H", size + 2)}, None
    if kind == "node offset outside the page":
        return {leaf * size + PAGE_HEADER: struct.pack("<H", size - 2)}, None
    if kind == "value past the page":
        return {_leaf_node(pages, leaves, inline=True): struct.pack("<H", 0xFFFF)}, None
    if kind == "sub-database flags":
        return {_leaf_node(pages, leaves, inline=True) + 4: struct.pack("<H", lmdbcheck.F_SUBDATA)}, None
    if kind == "broken overflow run":
        return {overflow * size + 10: struct.pack("<H", P_LEAF)}, None
    raise AssertionError(kind)


DAMAGE = {
    "too short": "too short to be an LMDB file",
    "truncated": "data.mdb is truncated",
    "first meta page": "one of its two meta pages (its first bytes) is damaged",
    "both meta pages": "does not start with an LMDB header",
    "child outside the file": "outside the file's pages",
    "loop": "is reached twice (a loop in the tree)",
    "page says another number": "says it is page",
    "impossible bounds": "has impossible bounds",
    "node offset outside the page": "outside the page",
    "value past the page": "its value runs past the page",
    "sub-database flags": "sub-database flags a feature cache never sets",
    "broken overflow run": "a broken overflow run at page",
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_each_kind_of_damage_is_named(kind, sound, tmp_path):
    changes, length = _damage(kind, *layout(sound, tmp_path))
    path = damaged_copy(sound, tmp_path, changes, length)
    assert DAMAGE[kind] in (lmdbcheck.problem(path) or "no problem found")


@pytest.mark.parametrize("kind", ["impossible bounds", "value past the page", "sub-database flags"])
def test_salvage_skips_a_damaged_leaf_and_keeps_every_other(kind, sound, tmp_path):
    pages, root, leaves, overflow = layout(sound, tmp_path)
    changes, _ = _damage(kind, pages, root, leaves, overflow)
    (offset,) = changes
    lost_leaf = offset // pages.page_size
    lost = {bytes(pages.data[at + NODE.size:at + NODE.size + NODE.unpack_from(pages.data, at)[3]])
            for at in nodes(pages, lost_leaf)}
    salvaged = dict(lmdbcheck.salvage(damaged_copy(sound, tmp_path, changes)))
    assert salvaged == {key: value for key, value in ENTRIES.items() if key not in lost}
    assert lost and len(salvaged) > len(lost)


def test_salvage_skips_a_subtree_outside_the_file(sound, tmp_path):
    pages, root, leaves, overflow = layout(sound, tmp_path)
    changes, _ = _damage("child outside the file", pages, root, leaves, overflow)
    salvaged = dict(lmdbcheck.salvage(damaged_copy(sound, tmp_path, changes)))
    assert salvaged and len(salvaged) < len(ENTRIES)
    assert all(ENTRIES[key] == value for key, value in salvaged.items())


def test_salvage_of_a_file_without_a_readable_meta_page_raises_damaged(sound, tmp_path):
    changes, _ = _damage("both meta pages", *layout(sound, tmp_path))
    with pytest.raises(lmdbcheck.Damaged, match="LMDB header"):
        list(lmdbcheck.salvage(damaged_copy(sound, tmp_path, changes)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), garbage=st.binary(min_size=1, max_size=16))
def test_the_check_never_fails_on_any_damage_only_names_it(sound, tmp_path, where, garbage):
    """Whatever bytes are overwritten, the check answers (a problem, or none) instead of raising: it is what stands
    between a damaged file and LMDB, so it must survive any file."""
    path = damaged_copy(sound, tmp_path, {int(where * len(sound)): garbage})
    found = lmdbcheck.problem(path)
    assert found is None or isinstance(found, str) and found


def test_salvage_ends_on_a_branch_that_points_back_to_the_root(sound, tmp_path):
    """A loop in the tree: salvage reads each page once (it ran forever before), keeping what the rest reaches."""
    import threading

    changes, _ = _damage("loop", *layout(sound, tmp_path))
    path, found = damaged_copy(sound, tmp_path, changes), []
    worker = threading.Thread(target=lambda: found.extend(lmdbcheck.salvage(path)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "salvage did not end on a looping tree"
    salvaged = dict(found)
    assert salvaged and len(salvaged) < len(ENTRIES)  # the looped child's subtree is lost, the rest kept
    assert all(ENTRIES[key] == value for key, value in salvaged.items())


def test_salvaging_a_cache_with_no_readable_meta_page_is_one_clear_error_and_keeps_the_file(tmp_path):
    from promptgen.errors import CacheError
    from promptgen.storage.cache_maintenance import salvage_files

    folder = tmp_path / "features.lmdb"
    folder.mkdir()
    garbage = bytes(range(256)) * 64  # 16 KiB that is no LMDB file
    (folder / "data.mdb").write_bytes(garbage)
    with pytest.raises(CacheError, match=r"features.lmdb: nothing in it can be salvaged .*cache clear --all"):
        salvage_files(tmp_path)
    assert (folder / "data.mdb").read_bytes() == garbage  # nothing lost: the file stays for whoever looks at it
