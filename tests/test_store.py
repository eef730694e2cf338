"""The one atomic writer (`hypermosaic.store`): readers see the old file or the whole new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypermosaic.store import Store, atomic_path, atomic_write, temporary_path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    atomic_write(target, b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the ne")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not visible until the block completes
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_temporaries_a_kill_leaves_are_swept_by_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    node = store.node_path(((0, 0),))
    left = temporary_path(node)
    left.parent.mkdir(parents=True)
    left.write_bytes(b"partial")
    assert left.name.startswith(".0_0.png.") and left.suffix == ".tmp"
    assert store.remove_temporaries() == 1 and not left.exists()
