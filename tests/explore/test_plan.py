"""What a live view shows and lacks, and in which order its nodes are made (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hypermosaic.explore.plan import LEVELS, View, ViewMessage, view_nodes
from hypermosaic.tree import ROOT, parse_address


def grid4(depth: int) -> int:
    return 4


def message(root: str = "root", rect=(0, 0, 1, 1), depth: int = 1) -> ViewMessage:
    return ViewMessage(type="view", root=root, rect=rect, depth=depth)


def cells(parent: str = "") -> list:
    prefix = f"{parent}/" if parent else ""
    return [parse_address(f"{prefix}{r}_{c}") for r in range(4) for c in range(4)]


def test_a_stored_view_is_all_present_and_wants_nothing():
    stored = {ROOT, *cells()}
    nodes = view_nodes(View.parse(message(depth=1), grid4), grid4, stored.__contains__)
    assert nodes.present == [ROOT, *cells()] and nodes.wanted == []
    assert nodes.present_keys()[:2] == ["root", "0_0"]


def test_missing_nodes_are_wanted_nearest_the_centre_first_and_shallow_before_deep():
    stored = {ROOT, parse_address("0_0")}
    nodes = view_nodes(View.parse(message(depth=2), grid4), grid4, stored.__contains__)
    assert nodes.present == [ROOT, parse_address("0_0")]
    centre = {parse_address(k) for k in ("1_1", "1_2", "2_1", "2_2")}
    assert set(nodes.wanted[:4]) == centre  # the four central children first
    depth_two = [a for a in nodes.wanted if len(a) == 2]
    assert sorted(depth_two) == sorted(cells("0_0"))
    assert nodes.wanted.index(depth_two[0]) > nodes.wanted.index(parse_address("3_3"))
    # nearest the view's centre (0.5, 0.5) first among 0_0's children: its bottom-right one
    assert depth_two[0] == parse_address("0_0/3_3")


def test_only_nodes_inside_the_view_count_and_a_shared_edge_is_outside():
    stored = {ROOT}
    nodes = view_nodes(View.parse(message(rect=(0, 0, 0.5, 0.5), depth=1), grid4), grid4,
                       stored.__contains__)
    assert sorted(nodes.wanted) == sorted(parse_address(k) for k in ("0_0", "0_1", "1_0", "1_1"))


def test_a_root_deeper_than_anything_made_wants_its_first_missing_ancestor():
    stored = {ROOT, parse_address("1_1")}
    view = View.parse(message(root="1_1/2_2/3_3", depth=5), grid4)
    assert view_nodes(view, grid4, stored.__contains__).wanted == [parse_address("1_1/2_2")]
    assert view_nodes(view, grid4, stored.__contains__).present == []


def test_a_view_costs_at_most_the_node_limit():
    looked: list = []

    def has(address) -> bool:
        looked.append(address)
        return True

    view_nodes(View.parse(message(depth=LEVELS), grid4), grid4, has, limit=50)
    assert len(looked) == 1 + 50  # the root is asked for once before the walk


def test_views_are_clipped_and_checked():
    view = View.parse(message(root="3_3", rect=(-1, 0.75, 2, 0.25), depth=99), grid4)
    assert (view.x0, view.y0, view.x1, view.y1) == (0.0, 0.25, 1.0, 0.75)
    assert view.depth == 1 + LEVELS
    assert View.parse(message(root="3_3", depth=0), grid4).depth == 1
    with pytest.raises(ValueError, match="outside the 4x4 grid"):
        View.parse(message(root="4_0"), grid4)
    with pytest.raises(ValueError, match="malformed node address"):
        View.parse(message(root="x"), grid4)
    with pytest.raises(ValidationError):
        ViewMessage.model_validate({"type": "view", "root": "root", "rect": [0, 0, 1, 1],
                                    "depth": 1, "extra": 1})
    with pytest.raises(ValidationError):
        ViewMessage.model_validate({"type": "view", "root": "root", "rect": [0, 0, 1, "nan"],
                                    "depth": 1})
