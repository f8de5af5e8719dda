"""A read-only mapping over parallel keys and values, made into a dict only when a value is looked up.

A replay's per-signal maps (fingerprints, suppression reasons) have a million entries, and a report without a
baseline or a compare replay never looks one up: building them cost a tenth of its time. Iterating and measuring
read the keys directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any


class LazyMap(Mapping[Any, Any]):
    """The mapping dict(zip(keys(), values())) of `length` distinct keys. `keys` and `values` give fresh iterables
    each call; the dict is built on the first lookup and kept."""

    __slots__ = ("_dict", "_keys", "_length", "_values")

    def __init__(self, keys: Callable[[], Iterable[Any]], values: Callable[[], Iterable[Any]], length: int) -> None:
        self._keys = keys
        self._values = values
        self._length = length
        self._dict: dict[Any, Any] | None = None

    def _built(self) -> dict[Any, Any]:
        if self._dict is None:
            self._dict = dict(zip(self._keys(), self._values(), strict=True))
        return self._dict

    def __getitem__(self, key: Any) -> Any:
        return self._built()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._built()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys()) if self._dict is None else iter(self._dict)

    def __len__(self) -> int:
        return self._length

    # The views and get of the built dict itself, so bulk work over them (set algebra, map) runs in C.
    def keys(self) -> Any:
        return self._built().keys()

    def values(self) -> Any:
        return self._built().values()

    def items(self) -> Any:
        return self._built().items()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._built().get(key, default)

    def as_dict(self) -> dict[Any, Any]:
        """The built dict (not a copy): for callers that look up many keys."""
        return self._built()

    def __repr__(self) -> str:
        return f"LazyMap({self._length} entries)"


def as_dict(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """A LazyMap's built dict, any other mapping as it is: lookups by C-level dict methods."""
    return mapping.as_dict() if isinstance(mapping, LazyMap) else mapping
