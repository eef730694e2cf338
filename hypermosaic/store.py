"""The on-disk build store: node images, written atomically, and a manifest.

Layout of an output directory::

    manifest.json          what was built, from which settings (fingerprints), what failed
    nodes/root.png         the primary image
    nodes/3_4.png          the node cut from tile (3, 4) of the root
    nodes/3_4/1_2.png      ... and its child at (1, 2)
    mosaic.dzi, mosaic_files/, index.html, openseadragon/, preview.png, mosaic.tif
                           (assembly outputs; `PUBLISHED_NAMES`)

A node file exists only when complete (temporary file + rename), so "the file is there" is the
resume test: a killed build loses at most the tiles in flight, and the temporary file of a
write it interrupted is swept when the build resumes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypermosaic.errors import InputError
from hypermosaic.tree import Address, Plan, address_key

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "PUBLISHED_NAMES",
    "Store",
    "atomic_path",
    "atomic_write",
    "check_writable",
    "disk_full",
    "folder_lock",
    "temporary_path",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# What `hypermosaic.publish.publish_build` writes beside the nodes (files and folders), and its
# staging leftovers: exactly what `Store.clear` removes besides the nodes and the manifest.
PUBLISHED_NAMES = (
    "mosaic.dzi",
    "mosaic_files",
    ".mosaic-staging",
    "index.html",
    "openseadragon",
    "preview.png",
    "mosaic.tif",
)


LOCK_NAME = ".hypermosaic.lock"


@contextmanager
def folder_lock(folder: Path, option: str = "--out") -> Iterator[Path]:
    """Hold the exclusive lock of an output folder (made if missing) while the block runs.

    One run writes a folder at a time: a second one gets `InputError` naming the folder and
    the process holding it. The lock is the operating system's (``flock``), so a crashed or
    killed run releases it with its last file descriptor. Also refuses, with one line, a
    folder that cannot be made or written, before any work.
    """
    check_writable(folder, option)
    with open(folder / LOCK_NAME, "a+") as handle:  # closing it releases the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InputError(f"{folder}: in use by another hypermosaic run (pid {holder}); "
                             f"wait for it to finish or choose another {option}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield folder


def check_writable(folder: Path, option: str = "--out") -> None:
    """`InputError` naming ``option`` unless ``folder`` exists (or can be made) and takes a
    new file: checked before any work, so no computation ends in a failed write."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_path(folder / ".write-probe")
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise InputError(f"{option} {folder}: an existing file, not a folder") from None
    except OSError as exc:
        raise InputError(f"{option} {folder}: cannot write here ({exc.strerror or exc})") from None


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException, folder: Path, needed: int | None = None) -> InputError | None:
    """The one-line `InputError` for a write that failed for lack of space (None for any
    other error): names the folder and, when known, the space needed. An `OSError` tells by
    its errno; libvips' own error only by the system's words in its message."""
    if isinstance(exc, OSError):
        if exc.errno not in _NO_SPACE:
            return None
    elif not any(os.strerror(code) in str(exc) for code in _NO_SPACE):
        return None
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    want = f"; about {needed / 2**30:,.1f} GiB more is needed" if needed else ""
    return InputError(f"{folder}: the disk is full ({free / 2**20:,.0f} MiB free{want}); "
                      "free some space and run the same command again to resume")


def temporary_path(path: Path) -> Path:
    """A hidden name beside ``path`` for writing it (``.name.PID.tmp``): renamed over
    ``path`` when complete, and swept by `Store.remove_temporaries` if a crash leaves it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces
    ``path`` in one rename, so readers see the old file or the whole new one. On an error
    (Ctrl-C included) the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class Store:
    """Node images and the manifest of one build output directory."""

    def __init__(self, root: Path | str, node_format: str = "png") -> None:
        self.root = Path(root)
        self.node_format = node_format

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def node_path(self, address: Address) -> Path:
        """Where a node's image lives (it may not exist yet)."""
        return self.nodes_dir / f"{address_key(address)}.{self.node_format}"

    def has(self, address: Address) -> bool:
        return self.node_path(address).is_file()

    def write_node(self, address: Address, data: bytes) -> Path:
        """Store an encoded node image atomically; returns its path."""
        path = self.node_path(address)
        atomic_write(path, data)
        return path

    def read_node(self, address: Address) -> bytes:
        return self.node_path(address).read_bytes()

    def load_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when the directory holds no build."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.manifest_path}: unreadable manifest: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            raise InputError(f"{self.manifest_path}: not a hypermosaic manifest (version 1)")
        return manifest

    def save_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(
            self.manifest_path,
            json.dumps({"version": MANIFEST_VERSION, **manifest}, indent=2).encode(),
        )

    def check_compatible(self, fingerprints: dict[str, str], force: bool,
                         remedy: str = "use --force to rebuild, or choose another --out"
                         ) -> None:
        """Refuse to mix nodes made from different settings; with ``force`` start afresh.

        Depths present in both the stored build and the new config must have equal
        fingerprints; a deeper or shallower build of the same settings resumes. Node images
        without a manifest are of unknown settings: refused, or with ``force`` removed.
        """
        manifest = self.load_manifest()
        if manifest is None:
            if self.nodes_dir.exists() and any(self.nodes_dir.iterdir()):
                if not force:
                    raise InputError(
                        f"{self.root}: holds node images but no manifest; {remedy}"
                    )
                self.clear()
            return
        stored = manifest.get("fingerprints", {})
        changed = sorted(
            (depth for depth in stored.keys() & fingerprints.keys()
             if stored[depth] != fingerprints[depth]),
            key=int,
        )
        if not changed:
            return
        if not force:
            what = ("the primary image or the global settings" if changed[0] == "0"
                    else f"the level-{changed[0]} settings")
            raise InputError(
                f"{self.root}: was built with different settings ({what} changed); "
                f"{remedy}"
            )
        self.clear()

    def remove_temporaries(self) -> int:
        """Delete the temporary node files a killed build left (SIGKILL skips the cleanup in
        `atomic_write`); returns how many. Only for the one build that owns the folder."""
        if not self.nodes_dir.is_dir():
            return 0
        stale = list(self.nodes_dir.rglob(".*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def clear_published(self) -> None:
        """Remove the published outputs (pyramid, viewer, preview, BigTIFF): a build about to
        change its nodes must not leave a stale mosaic on show."""
        partial = self.root.glob(".mosaic.tif.*.tmp")  # a BigTIFF a killed publish left
        for path in (*(self.root / name for name in PUBLISHED_NAMES), *partial):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the nodes, the manifest and the published outputs of a previous build.

        For --force: a rebuild must not serve a stale pyramid or preview, even with
        --no-publish. Only what a build writes is removed; other files in the folder stay.
        """
        self.clear_published()
        if self.nodes_dir.is_dir():
            shutil.rmtree(self.nodes_dir)
        self.manifest_path.unlink(missing_ok=True)

    def plan(self) -> Plan:
        """The plan recorded in the manifest (raises InputError if there is no build)."""
        manifest = self.load_manifest()
        if manifest is None:
            raise InputError(f"{self.root}: no hypermosaic build here (no {MANIFEST_NAME})")
        focus = manifest.get("focus")
        return Plan(
            size=int(manifest["size"]),
            grids=tuple(int(g) for g in manifest["grids"]),
            focus=None if focus is None else tuple(tuple(step) for step in focus),
            neighbours=manifest.get("neighbours"),
        )

    @classmethod
    def open(cls, root: Path | str) -> Store:
        """Open an existing build directory, with the node format its manifest records."""
        store = cls(root)
        manifest = store.load_manifest()
        if manifest is None:
            raise InputError(f"{root}: no hypermosaic build here (no {MANIFEST_NAME})")
        store.node_format = manifest["node_format"]
        return store

    def deepest_available(self, address: Address) -> Address:
        """The deepest stored ancestor-or-self of ``address`` (the root if nothing else)."""
        for depth in range(len(address), -1, -1):
            if self.has(address[:depth]):
                return address[:depth]
        raise InputError(f"{self.root}: the primary image is missing")
