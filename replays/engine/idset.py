"""A compact set of string ids, for uniqueness checks over millions of signals.

A Python set of strings costs about 120 bytes an id (table slot plus the str object); validating a 64 MiB bundle
of 665k signals spent 76 MiB on it inside a request worker. This set keeps only a 64-bit BLAKE2b digest per id in an
open-addressing table of machine words: 8 bytes a slot at load <= 0.7, about 12 bytes an id.

The price: two distinct ids with the same 64-bit digest count as one. At a million ids the chance of any such pair
is about 3 in 10^8, and it is deterministic (no per-process hash seed), so a verdict never changes between runs.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b

_MAX_LOAD_NUM, _MAX_LOAD_DEN = 7, 10


def _digest(item: str) -> int:
    value = int.from_bytes(blake2b(item.encode(), digest_size=8).digest(), "little")
    return value or 1  # 0 marks an empty slot


class IdSet:
    """add() and `in` for str ids; no removal and no iteration (nothing needs them)."""

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self, capacity: int = 1024) -> None:
        size = 1
        while size < capacity:
            size <<= 1
        self._table = array("Q", [0]) * size
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _slot(self, digest: int) -> int:
        table, mask = self._table, self._mask
        index = digest & mask
        while True:
            current = table[index]
            if current == 0 or current == digest:
                return index
            index = (index + 1) & mask

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        digest = _digest(item)
        return self._table[self._slot(digest)] == digest

    def add(self, item: str) -> bool:
        """Add item; return False when it (or an id with the same digest) was already there."""
        return self._insert(_digest(item))

    def add_new(self, items: list[str]) -> bool:
        """Add every item when none is here yet and no two are equal; otherwise add nothing and return False (the
        reader's bulk path: a piece of lines either passes whole or goes line by line, which words the duplicate)."""
        digests = [_digest(item) for item in items]
        if len(set(digests)) != len(digests) or any(self._table[self._slot(d)] == d for d in digests):
            return False
        for digest in digests:
            self._insert(digest)
        return True

    def _insert(self, digest: int) -> bool:
        index = self._slot(digest)
        if self._table[index] == digest:
            return False
        self._table[index] = digest
        self._count += 1
        if self._count * _MAX_LOAD_DEN > len(self._table) * _MAX_LOAD_NUM:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        self._table = array("Q", [0]) * (2 * len(old))
        self._mask = len(self._table) - 1
        table, mask = self._table, self._mask
        for digest in old:
            if digest:
                index = digest & mask
                while table[index]:
                    index = (index + 1) & mask
                table[index] = digest

    @property
    def nbytes(self) -> int:
        return self._table.itemsize * len(self._table)


class ExactIdSet(set):
    """A plain set with IdSet's add() -> bool, for callers that hold every signal in memory anyway (the CLI replay):
    there the digests save nothing, and a set's add is about five times cheaper."""

    __slots__ = ()

    def add(self, item: str) -> bool:  # type: ignore[override]
        size = len(self)
        super().add(item)
        return len(self) != size

    def add_new(self, items: list[str]) -> bool:
        """IdSet.add_new: all of `items` or none."""
        fresh = set(items)
        if len(fresh) != len(items) or not self.isdisjoint(fresh):
            return False
        self.update(fresh)
        return True
