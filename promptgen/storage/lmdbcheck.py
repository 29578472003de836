"""Checks an LMDB data file page by page, in Python, before LMDB maps it; and salvages what a damaged one holds.

LMDB has no page checksums and trusts the sizes and offsets it finds in its pages. A damaged page can
make it (or py-lmdb, which touches every byte of a value it returns) read past the end of the file,
which kills the process with SIGBUS, or fail an assertion and abort. Reading the file as plain bytes
cannot crash, so this module walks the B-trees of the main and free-page databases from their roots
and checks every node LMDB would follow: page numbers inside the file, offsets and sizes inside their
page, overflow runs inside the file, no page reached twice. A file that passes can be mapped safely
(a damaged *value* is then caught by the cache's own checksums).

Layout (LMDB 0.9, 64-bit): a page starts with a 16-byte header (page number u64, pad u16, flags u16,
lower u16, upper u16 -- or u32 page count for overflow pages), then u16 node offsets; a node is
(lo u16, hi u16, flags u16, key size u16, key, data). In a branch node lo|hi|flags is the child's
page number; in a leaf node lo|hi is the data size, inline unless flag F_BIGDATA, where the data is
the page number of an overflow run.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

MAGIC = 0xBEEFC0DE
HEADER = struct.Struct("<QHHHH")  # page number, pad, flags, lower, upper
OVERFLOW_PAGES = struct.Struct("<I")  # at byte 12 of an overflow page
NODE = struct.Struct("<HHHH")  # lo, hi, flags, key size
PGNO = struct.Struct("<Q")
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
PAGE_HEADER = 16
META_AT = 16  # the meta record starts after the page header
# within the meta record: magic u32, version u32, address u64, map size u64, then two database
# records of 48 bytes (pad u32 -- the page size, in the first --, flags u16, depth u16, branch, leaf
# and overflow page counts, entries and root page, all u64), then the last page and the txn id.
DB_AT, DB_SIZE, ROOT_AT, LAST_PAGE_AT = 24, 48, 40, 120
NO_PAGE = 2**64 - 1  # an empty database's root


class Damaged(Exception):
    """The file is not a sound LMDB file; the message says where."""


class Pages:
    """The pages of an LMDB data file, read as bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.broken_meta = False
        if len(self.data) < 2 * 512:
            raise Damaged(f"data.mdb is {len(self.data)} bytes, too short to be an LMDB file")
        self.page_size = self._page_size()
        metas = []
        for page in (0, 1):
            at = page * self.page_size
            if at + META_AT + LAST_PAGE_AT + 16 > len(self.data):
                continue
            if struct.unpack_from("<I", self.data, at + META_AT)[0] != MAGIC or \
                    not HEADER.unpack_from(self.data, at)[2] & P_META:
                self.broken_meta = True  # LMDB refuses a file unless both meta pages are intact
                continue
            last_page, txn = struct.unpack_from("<QQ", self.data, at + META_AT + LAST_PAGE_AT)
            roots = [PGNO.unpack_from(self.data, at + META_AT + DB_AT + db * DB_SIZE + ROOT_AT)[0] for db in (0, 1)]
            metas.append((txn, last_page, roots))
        if not metas:
            raise Damaged("data.mdb has no readable LMDB meta page")
        self.txn, self.last_page, self.roots = max(metas)  # what LMDB uses: the newer meta
        if len(self.data) < (self.last_page + 1) * self.page_size:
            raise Damaged(f"data.mdb is truncated ({len(self.data)} bytes; its pages end at byte "
                          f"{(self.last_page + 1) * self.page_size})")

    def _page_size(self) -> int:
        """The page size the first meta record states, else the first that finds the second meta page."""
        stated = struct.unpack_from("<I", self.data, META_AT + DB_AT)[0]
        if struct.unpack_from("<I", self.data, META_AT)[0] == MAGIC and 512 <= stated <= 65536 \
                and not stated & (stated - 1):
            return stated
        for size in (4096, 8192, 16384, 32768, 65536, 2048, 1024, 512):  # page 0 is gone: find page 1
            if size + META_AT + 4 <= len(self.data) and struct.unpack_from("<I", self.data, size + META_AT)[0] == MAGIC:
                return size
        raise Damaged("data.mdb does not start with an LMDB header (its first bytes were overwritten)")

    def page(self, number: int) -> memoryview:
        if not 2 <= number <= self.last_page:
            raise Damaged(f"a node points to page {number}, outside the file's pages 2..{self.last_page}")
        start = number * self.page_size
        return memoryview(self.data)[start:start + self.page_size]

    def walk(self, root: int, *, collect: bool) -> Iterator[tuple[bytes, bytes]]:
        """Check the tree under ``root``; with ``collect``, yield its (key, value) pairs as it goes."""
        if root == NO_PAGE:
            return
        seen, stack = set(), [root]
        while stack:
            number = stack.pop()
            if number in seen:
                raise Damaged(f"page {number} is reached twice (a loop in the tree)")
            seen.add(number)
            page = self.page(number)
            stored, _, flags, lower, upper = HEADER.unpack_from(page)
            if stored != number:
                raise Damaged(f"page {number} says it is page {stored}")
            kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2)
            if kind not in (P_BRANCH, P_LEAF):
                raise Damaged(f"page {number} is not a branch or leaf page (flags {flags:#x})")
            if not PAGE_HEADER <= lower <= upper <= self.page_size or (lower - PAGE_HEADER) % 2:
                raise Damaged(f"page {number} has impossible bounds ({lower}, {upper})")
            count = (lower - PAGE_HEADER) // 2
            if kind == P_BRANCH and count == 0:
                raise Damaged(f"branch page {number} has no children")
            for index in range(count):
                offset = struct.unpack_from("<H", page, PAGE_HEADER + 2 * index)[0]
                if not lower <= offset <= self.page_size - NODE.size:
                    raise Damaged(f"page {number}, node {index}: offset {offset} outside the page")
                lo, hi, node_flags, key_size = NODE.unpack_from(page, offset)
                key_end = offset + NODE.size + key_size
                if key_end > self.page_size:
                    raise Damaged(f"page {number}, node {index}: its key runs past the page")
                if kind == P_BRANCH:
                    stack.append(lo | hi << 16 | node_flags << 32)
                    continue
                size = lo | hi << 16
                if node_flags & (F_SUBDATA | F_DUPDATA):
                    raise Damaged(f"page {number}, node {index}: sub-database flags a feature cache never sets")
                if node_flags & F_BIGDATA:
                    value = self._overflow(number, index, page, key_end, size)
                else:
                    if key_end + size > self.page_size:
                        raise Damaged(f"page {number}, node {index}: its value runs past the page")
                    value = page[key_end:key_end + size]
                if collect:
                    yield bytes(page[offset + NODE.size:key_end]), bytes(value)

    def _overflow(self, number: int, index: int, page: memoryview, key_end: int, size: int) -> memoryview:
        if key_end + PGNO.size > self.page_size:
            raise Damaged(f"page {number}, node {index}: its overflow page number runs past the page")
        first = PGNO.unpack_from(page, key_end)[0]
        run = self.page(first)
        stored, _, flags, _, _ = HEADER.unpack_from(run)
        (pages,) = OVERFLOW_PAGES.unpack_from(run, 12)
        if stored != first or not flags & P_OVERFLOW or pages < 1 or first + pages - 1 > self.last_page:
            raise Damaged(f"page {number}, node {index}: a broken overflow run at page {first}")
        if size > pages * self.page_size - PAGE_HEADER:
            raise Damaged(f"page {number}, node {index}: a value larger than its overflow run")
        start = first * self.page_size + PAGE_HEADER
        return memoryview(self.data)[start:start + size]


def problem(path: Path) -> str | None:
    """Why the LMDB file ``path`` must not be mapped, or None when every page LMDB would follow is sound."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        pages = Pages(path)
        if pages.broken_meta:
            return "one of its two meta pages (its first bytes) is damaged"
        for root in pages.roots:  # the free-page database, then the main one
            for _ in pages.walk(root, collect=False):
                pass
    except Damaged as error:
        return str(error)
    except OSError as error:
        return f"data.mdb cannot be read ({error.strerror or error})"
    return None


def salvage(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the main database that can be reached through sound pages (damaged subtrees skipped)."""
    pages = Pages(path)
    stack = [pages.roots[1]] if pages.roots[1] != NO_PAGE else []
    seen = set()  # a damaged branch may point back up the tree: each page is read once, so salvage ends
    while stack:
        number = stack.pop()
        if number in seen:
            continue
        seen.add(number)
        try:
            page = pages.page(number)
            flags = HEADER.unpack_from(page)[2]
            if flags & P_BRANCH:
                lower = HEADER.unpack_from(page)[3]
                for index in range(max(0, (min(lower, pages.page_size) - PAGE_HEADER) // 2)):
                    offset = struct.unpack_from("<H", page, PAGE_HEADER + 2 * index)[0]
                    if offset <= pages.page_size - NODE.size:
                        lo, hi, node_flags, _ = NODE.unpack_from(page, offset)
                        stack.append(lo | hi << 16 | node_flags << 32)
                continue
            yield from list(pages.walk(number, collect=True))  # a leaf: all of it, or none if it is damaged
        except Damaged:
            continue
