"""The pure part of live exploring: what a view shows, what it lacks, in which order to make it.

A viewer shows one *root* node and up to `LEVELS` levels below it (its tile source: tiles are
nodes, a level is a depth), so the numbers a browser handles stay small however deep the root
is. It reports its view as a rectangle in the root's unit square and the deepest depth its
screen resolves. `view_nodes` walks the tree inside that rectangle: stored nodes are *present*
(the viewer may load them), missing nodes whose parent is stored are *wanted*, nearest the
view's centre first, shallow before deep (a node needs its parent). Nothing here does I/O: the
store is asked through ``has``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field

from hypermosaic.settings import Strict
from hypermosaic.tree import Address, address_key, parse_address

__all__ = ["LEVELS", "NODE_LIMIT", "View", "ViewMessage", "ViewNodes", "view_nodes"]

LEVELS = 3
"""Levels below its root that a viewer's tile source reaches; it re-roots before the last."""
NODE_LIMIT = 2048
"""Most nodes one view walks: a view (or a hostile client) never costs more than this."""


class ViewMessage(Strict):
    """A viewer's view as it sends it: ``{"type": "view", "root": "1_2/0_3", "rect":
    [x0, y0, x1, y1], "depth": 7, "seq": 12}`` (rect in the root's unit square; ``seq`` is
    echoed in the answer, so the page knows which view an answer is for)."""

    type: str = Field(pattern="^view$")
    root: str = Field(max_length=4096)
    rect: tuple[float, float, float, float]
    depth: int = Field(ge=0, le=1_000_000)
    seq: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class View:
    """A validated view: the rectangle clipped to the root, the depth to ``LEVELS`` below it."""

    root: Address
    x0: float
    y0: float
    x1: float
    y1: float
    depth: int

    @classmethod
    def parse(cls, message: ViewMessage, grid_at: Callable[[int], int]) -> View:
        """A view from its message; ValueError for a root outside the grids."""
        root = parse_address(message.root)
        for depth, (row, col) in enumerate(root):
            grid = grid_at(depth)
            if not (0 <= row < grid and 0 <= col < grid):
                raise ValueError(f"root: step {row}_{col} is outside the {grid}x{grid} grid")
        x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in message.rect)
        depth = min(max(message.depth, len(root)), len(root) + LEVELS)
        return cls(root, min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), depth)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


@dataclass(frozen=True)
class ViewNodes:
    """What a view shows (``present``) and lacks (``wanted``, in the order to make them)."""

    present: list[Address]
    wanted: list[Address]

    def present_keys(self) -> list[str]:
        return [address_key(a) for a in self.present]


def view_nodes(view: View, grid_at: Callable[[int], int], has: Callable[[Address], bool],
               limit: int = NODE_LIMIT) -> ViewNodes:
    """Walk the nodes inside ``view`` down to its depth: stored ones are present (and their
    children inside the view are walked), missing ones are wanted. At most ``limit`` nodes are
    looked at, shallowest first. A root that is not stored wants its first missing ancestor."""
    if not has(view.root):  # a shared link deeper than anything made: its ancestors first
        first = next(view.root[:d] for d in range(len(view.root) + 1) if not has(view.root[:d]))
        return ViewNodes([], [first] if first else [])
    present: list[Address] = []
    wanted: list[tuple[int, float, Address]] = []
    cx, cy = view.centre
    level: list[tuple[Address, float, float, float]] = [(view.root, 0.0, 0.0, 1.0)]
    seen = 0
    while level and seen < limit:
        deeper: list[tuple[Address, float, float, float]] = []
        for address, x, y, side in level:
            seen += 1
            if seen > limit:
                break
            if not has(address):
                distance = (x + side / 2 - cx) ** 2 + (y + side / 2 - cy) ** 2
                wanted.append((len(address), distance, address))
                continue
            present.append(address)
            if len(address) >= view.depth:
                continue
            grid = grid_at(len(address))
            step = side / grid
            for row in range(grid):
                top = y + row * step
                if top >= view.y1 or top + step <= view.y0:
                    continue
                for col in range(grid):
                    left = x + col * step
                    if left < view.x1 and left + step > view.x0:
                        deeper.append((address + ((row, col),), left, top, step))
        level = deeper
    wanted.sort(key=lambda item: (item[0], item[1]))
    return ViewNodes(present, [address for _, _, address in wanted])
