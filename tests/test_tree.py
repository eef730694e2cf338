from __future__ import annotations

import pytest

from hypermosaic.tree import ROOT, Plan, address_key, node_seed, parse_address


def test_address_key_round_trips():
    for address in [ROOT, ((3, 4),), ((0, 0), (15, 2), (7, 7))]:
        assert parse_address(address_key(address)) == address
    assert address_key(((3, 4), (1, 2))) == "3_4/1_2"
    with pytest.raises(ValueError, match="malformed"):
        parse_address("3-4")


def test_node_seed_is_stable_and_distinct():
    assert node_seed(7, ((1, 2),)) == node_seed(7, ((1, 2),))
    seeds = {node_seed(7, ((r, c),)) for r in range(8) for c in range(8)}
    assert len(seeds) == 64
    assert node_seed(7, ((1, 2),)) != node_seed(8, ((1, 2),))
    assert node_seed(7, ((1, 2),)) != node_seed(7, ((2, 1),))
    assert 0 <= node_seed(123, ROOT) < 2**63


def test_full_plan_counts_and_geometry():
    plan = Plan(size=64, grids=(4, 2))
    nodes = list(plan.nodes())
    assert len(nodes) == plan.count() == 1 + 16 + 64
    assert len(set(nodes)) == len(nodes)
    assert plan.canvas_size == 64 * 8
    assert plan.span(0) == 512 and plan.span(1) == 128 and plan.span(2) == 64
    assert plan.origin(((1, 2), (1, 0))) == (2 * 128 + 0, 1 * 128 + 64)
    assert plan.tile_box(((1, 2),)) == (16, 32, 32, 48)
    # parents come before their children
    seen = set()
    for node in nodes:
        assert node[:-1] in seen or node == ROOT
        seen.add(node)


def test_focus_plan_expands_the_path_and_its_neighbours_one_level_down():
    plan = Plan(size=64, grids=(4, 4, 4), focus=((1, 1), (2, 2)), neighbours=1)
    nodes = list(plan.nodes())
    by_depth = {d: {n for n in nodes if len(n) == d} for d in range(4)}
    ring = {(r, c) for r in range(3) for c in range(3)}  # within 1 of (1, 1)
    assert by_depth[1] == {(cell,) for cell in ring}
    # every depth-1 node is the path or a neighbour of it: all are expanded
    assert all(plan.is_expanded(n) for n in by_depth[1])
    # the path node keeps its children near the next step (2, 2); each neighbour all 16
    near = {(r, c) for r in range(1, 4) for c in range(1, 4)}
    assert {n[1] for n in by_depth[2] if n[0] == (1, 1)} == near
    for cell in ring - {(1, 1)}:
        assert len([n for n in by_depth[2] if n[0] == cell]) == 16
    # one level down only: a neighbour's children are leaves; the path's neighbours expand
    expanded2 = {n for n in by_depth[2] if plan.is_expanded(n)}
    assert expanded2 == {((1, 1), cell) for cell in near}
    # below the path's last step it continues through the central tile (2, 2) of the grid
    assert plan.path == ((1, 1), (2, 2), (2, 2))
    assert {n[2] for n in by_depth[3] if n[:2] == ((1, 1), (2, 2))} == near
    assert len(by_depth[3]) == 9 + 8 * 16
    assert len(by_depth[2]) == 9 + 8 * 16
    assert plan.count() == len(nodes) == 1 + 9 + 137 + 137


def test_focus_plan_without_neighbours_expands_only_the_path():
    plan = Plan(size=64, grids=(8, 8, 8), focus=((3, 4), (2, 5)))
    assert plan.count() == 1 + 64 + 64 + 64  # examples/turtle.toml's 193 nodes
    assert {n for n in plan.nodes() if plan.is_expanded(n)} == {(), ((3, 4),), ((3, 4), (2, 5))}
    only = Plan(size=64, grids=(2, 2, 2), focus=((0, 1), (1, 1), (1, 0)), neighbours=0)
    assert list(only.nodes()) == [(), ((0, 1),), ((0, 1), (1, 1)), ((0, 1), (1, 1), (1, 0))]


def test_a_short_focus_path_continues_through_the_central_tile():
    plan = Plan(size=64, grids=(4, 4, 4), focus=((1, 1),))
    assert plan.path == ((1, 1), (2, 2), (2, 2))
    deepest = {n for n in plan.nodes() if len(n) == 3}
    assert deepest == {((1, 1), (2, 2), (r, c)) for r in range(4) for c in range(4)}
    assert plan.count() == 1 + 16 + 16 + 16
    # the same plan as the path written out in full
    full = Plan(size=64, grids=(4, 4, 4), focus=((1, 1), (2, 2)))
    assert list(plan.nodes()) == list(full.nodes())


def test_validate_address_names_the_bad_step():
    plan = Plan(size=64, grids=(4, 2))
    assert plan.validate_address([(3, 3), (1, 1)]) == ((3, 3), (1, 1))
    with pytest.raises(ValueError, match="outside the 2x2 grid"):
        plan.validate_address([(3, 3), (2, 0)])
    with pytest.raises(ValueError, match="deeper"):
        plan.validate_address([(0, 0)] * 3)
