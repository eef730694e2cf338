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


def test_focus_plan_expands_only_the_path():
    plan = Plan(size=64, grids=(4, 4, 4), focus=((1, 1), (2, 2)), neighbours=1)
    nodes = set(plan.nodes())
    depth1 = {n for n in nodes if len(n) == 1}
    assert depth1 == {((r, c),) for r in range(3) for c in range(3)}
    depth2 = {n for n in nodes if len(n) == 2}
    assert all(n[0] == (1, 1) for n in depth2) and len(depth2) == 9
    depth3 = {n for n in nodes if len(n) == 3}
    assert all(n[:2] == ((1, 1), (2, 2)) for n in depth3) and len(depth3) == 16
    assert plan.count() == 1 + 9 + 9 + 16


def test_validate_address_names_the_bad_step():
    plan = Plan(size=64, grids=(4, 2))
    assert plan.validate_address([(3, 3), (1, 1)]) == ((3, 3), (1, 1))
    with pytest.raises(ValueError, match="outside the 2x2 grid"):
        plan.validate_address([(3, 3), (2, 0)])
    with pytest.raises(ValueError, match="deeper"):
        plan.validate_address([(0, 0)] * 3)
