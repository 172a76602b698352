"""An immutable, hashable mapping iterated in key order, for values of frozen dataclasses.

A frozen dataclass must stay hashable and compare by value; a dict would break both, and a tuple
of pairs would make `resource.labels["k"]` awkward for callers. Labels and the `aws_tags`
condition are both such mappings and differ only in how a value is normalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class FrozenMapping(Mapping[str, V], Generic[V]):
    """Keys sorted once; equal to another of its kind, or to any mapping with the same items."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        data = {key: self._value(value) for key, value in pairs}
        self._items: tuple[tuple[str, V], ...] = tuple(sorted(data.items()))
        self._map: dict[str, V] = dict(self._items)

    @staticmethod
    def _value(value: Any) -> Any:
        """How a value is stored; subclasses normalise (e.g. a list of values to a tuple)."""
        return value

    def __getitem__(self, key: str) -> V:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._map == {key: self._value(value) for key, value in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._map!r})"
