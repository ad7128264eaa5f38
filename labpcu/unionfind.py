"""Disjoint sets (union-find with path compression): which things one connection
joins. The bench's element guard groups nets through device elements with it, and the
simulated bench groups what its closed relays join and what a capacitive step moves."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class UnionFind(Generic[T]):
    """Members are added on first sight; :meth:`find` gives a member's representative."""

    def __init__(self) -> None:
        self.parent: dict[T, T] = {}

    def __contains__(self, x: object) -> bool:
        return x in self.parent

    def __iter__(self) -> Iterator[T]:
        return iter(list(self.parent))

    def find(self, x: T) -> T:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: T, b: T) -> None:
        """Join the sets of ``a`` and ``b``; ``a``'s representative stays theirs."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
