"""The tile tree: node addresses, per-node seeds and the expansion plan.

A node's *address* is its path of ``(row, col)`` steps from the root; the root (the primary image)
has the empty address. Every node image is ``size`` pixels square; a node at depth ``d`` is cut by
``grids[d]`` tiles per side into its children. Everything here is pure: the same config gives the
same plan, the same seeds and the same canvas geometry on every machine.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "Address",
    "ROOT",
    "Plan",
    "address_key",
    "parse_address",
    "derive_seed",
    "node_seed",
]

Address = tuple[tuple[int, int], ...]
ROOT: Address = ()


def address_key(address: Address) -> str:
    """A stable text form of an address: ``root`` or ``3_4/1_2`` (row_col per level)."""
    if not address:
        return "root"
    return "/".join(f"{row}_{col}" for row, col in address)


def parse_address(key: str) -> Address:
    """Inverse of `address_key`; raises ValueError on malformed text."""
    key = key.strip().strip("/")
    if key in ("", "root"):
        return ROOT
    steps = []
    for part in key.split("/"):
        row, sep, col = part.partition("_")
        if not sep or not row.isdigit() or not col.isdigit():
            raise ValueError(f"malformed node address {key!r} (expected row_col/row_col/...)")
        steps.append((int(row), int(col)))
    return tuple(steps)


def derive_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the part ``name`` of whatever ``seed`` makes, by a stable hash:
    independent of order, worker and machine, so any part can be made again alone."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def node_seed(root_seed: int, address: Address) -> int:
    """A 63-bit seed for one node, from the root seed and its address (`derive_seed`)."""
    return derive_seed(root_seed, address_key(address))


@dataclass(frozen=True)
class Plan:
    """Which nodes exist and where they sit on the final canvas.

    ``grids[d]`` cuts a depth-``d`` node into ``grids[d]**2`` children, for ``d < depth``.

    With a ``focus`` path the tree is expanded only around it. The path is continued through
    the central tile ``(grid // 2, grid // 2)`` of every level below its last step (as
    ``hypermosaic video`` zooms), so it always reaches ``depth``. Every node on the path is
    expanded. ``neighbours`` (``None``: no limit) keeps, of a path node's children, only those
    within that many tiles (Chebyshev distance in that grid) of the path's next step, and those
    neighbours are expanded too, one level down: their children exist and are leaves.
    """

    size: int
    grids: tuple[int, ...]
    focus: tuple[tuple[int, int], ...] | None = None
    neighbours: int | None = None

    @property
    def depth(self) -> int:
        return len(self.grids)

    @property
    def canvas_size(self) -> int:
        """Side of the assembled canvas in pixels: size x product of the grids."""
        return self.size * math.prod(self.grids)

    def tile_size(self, depth: int) -> int:
        """Side, in pixels of its parent's image, of a tile cut from a depth-``depth`` node."""
        return self.size // self.grids[depth]

    def span(self, depth: int) -> int:
        """Side, in canvas pixels, covered by one node at ``depth``."""
        return self.size * math.prod(self.grids[depth:])

    @property
    def path(self) -> Address:
        """The focus path continued through central tiles to ``depth`` steps (empty: no focus)."""
        if self.focus is None:
            return ROOT
        steps = tuple((row, col) for row, col in self.focus[: self.depth])
        return steps + tuple((g // 2, g // 2) for g in self.grids[len(steps) :])

    def _near_path(self, address: Address) -> bool:
        """Whether a node is a child of a path node within ``neighbours`` of the path's step."""
        depth = len(address)
        if self.neighbours is None or depth == 0:
            return False
        path = self.path
        if tuple(address[:-1]) != path[: depth - 1]:
            return False
        (row, col), (fr, fc) = address[-1], path[depth - 1]
        return max(abs(row - fr), abs(col - fc)) <= self.neighbours

    def is_expanded(self, address: Address) -> bool:
        """Whether the node is cut into children in this plan."""
        depth = len(address)
        if depth >= self.depth:
            return False
        if self.focus is None:
            return True
        return tuple(address) == self.path[:depth] or self._near_path(address)

    def children(self, address: Address) -> list[Address]:
        """The planned children of a node, in raster order."""
        if not self.is_expanded(address):
            return []
        grid = self.grids[len(address)]
        cells = [address + ((r, c),) for r in range(grid) for c in range(grid)]
        on_path = self.focus is not None and tuple(address) == self.path[: len(address)]
        if on_path and self.neighbours is not None:
            cells = [cell for cell in cells if self._near_path(cell)]
        return cells

    def nodes(self) -> Iterator[Address]:
        """Every planned node, parents before children (depth-first, raster order)."""
        stack: list[Address] = [ROOT]
        while stack:
            address = stack.pop()
            yield address
            stack.extend(reversed(self.children(address)))

    def count(self) -> int:
        """Number of planned nodes, the root included."""
        if self.focus is None:
            total, level = 1, 1
            for grid in self.grids:
                level *= grid * grid
                total += level
            return total
        return sum(1 for _ in self.nodes())

    def origin(self, address: Address) -> tuple[int, int]:
        """Top-left corner ``(x, y)`` of a node on the canvas, in canvas pixels."""
        x = y = 0
        for depth, (row, col) in enumerate(address):
            step = self.span(depth + 1)
            x += col * step
            y += row * step
        return x, y

    def tile_box(self, address: Address) -> tuple[int, int, int, int]:
        """Where a node was cut from its parent: ``(top, bottom, left, right)`` in parent pixels."""
        if not address:
            raise ValueError("the root is not cut from a parent")
        row, col = address[-1]
        tile = self.tile_size(len(address) - 1)
        return row * tile, (row + 1) * tile, col * tile, (col + 1) * tile

    def validate_address(self, address: Sequence[tuple[int, int]]) -> Address:
        """Check an address against the grids; returns it as a tuple or raises ValueError."""
        address = tuple((int(r), int(c)) for r, c in address)
        if len(address) > self.depth:
            raise ValueError(f"address {address_key(address)} is deeper than depth {self.depth}")
        for depth, (row, col) in enumerate(address):
            grid = self.grids[depth]
            if not (0 <= row < grid and 0 <= col < grid):
                raise ValueError(
                    f"step {row}_{col} of {address_key(address)} is outside the {grid}x{grid} grid"
                )
        return address
