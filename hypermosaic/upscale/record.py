"""What decided each output's pixels, recorded beside it, so that a re-run skips only what
still matches (as a build resumes by its settings fingerprints).

An output's pixels follow from its input's bytes and from `Settings`: the model (for a weights
file, a digest of its content, `hypermosaic.identity.model_file_digest`), the scale, the tile
and its overlap, and the compute dtype as asked for. Once an output is in place, a small hidden
JSON beside it, ``.<name>.upscale.json`` (`record_path`), written atomically, records both.
A re-run compares (`pending_jobs`):

- no output: upscaled;
- an output whose record matches: done, skipped;
- an output whose record differs, or that has no record (written by an older hypermosaic or by
  something else, so its settings are unknown): refused with one line naming it and
  ``--force``; with ``--force`` upscaled again, its record removed first, so that an
  interrupted run never leaves a stale output beside a current record.

The input is identified by its SHA-256 (`hypermosaic.identity.file_digest`); its size and
modification time are kept too, so that a re-run hashes only inputs whose size or time changed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hypermosaic.errors import InputError
from hypermosaic.identity import ESRGAN_MODELS, file_digest, model_file_digest
from hypermosaic.store import atomic_write
from hypermosaic.upscale.plan import UpscaleJob

__all__ = [
    "RECORD_VERSION",
    "Settings",
    "input_identity",
    "pending_jobs",
    "read_record",
    "record_path",
    "remove_temporaries",
    "write_record",
]

RECORD_VERSION = 1
"""Increased when the same settings would give other pixels (a new tiling method, say): older
records then differ, and their outputs are refused until upscaled again with ``--force``."""


@dataclass(frozen=True)
class Settings:
    """What decides an upscale's pixels besides its input, as recorded and compared.

    ``model`` is a registry name, or ``weights <size>:<digest>`` for a weights file (its name
    may change, its content may not); ``dtype`` is the one asked for (``auto`` included);
    ``refine`` the detail pass's settings as one JSON line
    (`hypermosaic.upscale.refine.refine_fingerprint`), None without one (and in the records
    of older versions, which had none).
    """

    model: str
    scale: float
    tile: int
    overlap: int
    dtype: str
    refine: str | None = None

    @classmethod
    def of(cls, model: str, scale: float, tile: int, overlap: int, dtype: str) -> Settings:
        """The settings of an upscale with ``model`` (a registry name, else a weights file)."""
        digest = None if model in ESRGAN_MODELS else model_file_digest(model, "--model")
        return cls(model if digest is None else f"weights {digest}", float(scale), tile,
                   overlap, dtype)


def record_path(dst: Path) -> Path:
    """The hidden record beside an output: ``.<name>.upscale.json``."""
    return dst.with_name(f".{dst.name}.upscale.json")


def input_identity(src: Path) -> dict[str, Any]:
    """An input's size, modification time and SHA-256, for its output's record; `InputError`
    if it cannot be read."""
    try:
        stat = src.stat()
    except OSError as exc:
        raise InputError(f"{src}: cannot read ({exc.strerror or exc})") from None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": file_digest(src, "input")}


def write_record(dst: Path, settings: Settings, source: dict[str, Any]) -> None:
    """Record, atomically, the settings and input (`input_identity`) that made ``dst``."""
    recorded = {key: value for key, value in asdict(settings).items()
                if key != "refine" or value is not None}  # plain records as they were
    record = {"version": RECORD_VERSION, "settings": recorded, "input": source}
    atomic_write(record_path(dst), (json.dumps(record, indent=1) + "\n").encode())


def read_record(dst: Path) -> dict[str, Any] | None:
    """The record of ``dst``; None when there is none or it is unreadable (unknown settings)."""
    try:
        record = json.loads(record_path(dst).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _same_input(recorded: Any, src: Path) -> bool:
    """Whether ``src`` is the recorded input: same size and time, else same SHA-256."""
    if not isinstance(recorded, dict):
        return False
    stat = src.stat()
    if recorded.get("size") != stat.st_size:
        return False
    if recorded.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return bool(recorded.get("sha256") == file_digest(src, "input"))


def _change(key: str, old: Any, new: Any) -> str:
    """One setting's change, in words: ``scale 2, now 4``."""
    if key == "refine":
        return "the detail pass (--refine) changed" if old and new else (
            "a detail pass (--refine) added" if new else "the detail pass (--refine) dropped")

    def show(value: Any) -> str:
        if key == "model" and str(value).startswith("weights "):
            return "a weights file"
        return f"{value:g}" if isinstance(value, float) else str(value)

    if show(old) == show(new):  # two weights files
        return "the weights file's content changed"
    return f"{key} {show(old)}, now {show(new)}"


def _changes(job: UpscaleJob, settings: Settings) -> list[str] | None:
    """None when ``job``'s output is recorded as made with ``settings`` from its input; else
    what differs (empty: no record)."""
    record = read_record(job.dst)
    if record is None:
        return []
    if record.get("version") != RECORD_VERSION:
        return [f"recorded by another version ({record.get('version')!r}, now "
                f"{RECORD_VERSION})"]
    stored = record.get("settings")
    stored = stored if isinstance(stored, dict) else {}
    changes = [
        _change(key, stored.get(key), value)
        for key, value in asdict(settings).items()
        if stored.get(key) != value
    ]
    if not _same_input(record.get("input"), job.src):
        changes.append(f"input {job.src} changed")
    return changes or None


def pending_jobs(jobs: Sequence[UpscaleJob], settings: Settings,
                 force: bool = False) -> list[UpscaleJob]:
    """The jobs still to run: those whose output is missing, and with ``force`` those whose
    output was made with other settings or is of unknown settings (their records are removed
    now). Without ``force`` such an output raises `InputError` naming it and ``--force``."""
    pending, stale = [], []
    for job in jobs:
        if not job.dst.exists():
            pending.append(job)
            continue
        changes = _changes(job, replace(settings, scale=float(job.scale)))
        if changes is not None:
            pending.append(job)
            stale.append((job, changes))
    if stale and not force:
        job, changes = stale[0]
        what = (f"made with other settings ({'; '.join(changes)})" if changes else
                "exists, with no record of the settings that made it (written by an older "
                "hypermosaic, or another file)")
        more = f" (and {len(stale) - 1:,} more)" if len(stale) > 1 else ""
        raise InputError(f"{job.dst}: {what}{more}; use --force to upscale again, or choose "
                         "another --out")
    for job, _ in stale:
        record_path(job.dst).unlink(missing_ok=True)
    return pending


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.\d+\.(?P<kind>tmp|dz)")


def remove_temporaries(jobs: Sequence[UpscaleJob]) -> None:
    """Delete what a killed run left while writing these outputs: temporary files
    (`hypermosaic.store.temporary_path`, ``.<name>.<pid>.tmp``) and DeepZoom staging folders
    (`hypermosaic.publish.staged_deepzoom`, ``.<stem>.<pid>.dz``). Only for the run that holds
    the output folders' locks."""
    owned: dict[Path, dict[str, set[str]]] = {}
    for job in jobs:
        names = owned.setdefault(job.dst.parent, {"tmp": set(), "dz": set()})
        names["tmp"] |= {job.dst.name, record_path(job.dst).name}
        if job.dst.suffix.lower() == ".dzi":
            names["dz"].add(job.dst.stem)
    for folder, names in owned.items():
        for path in folder.glob(".*"):
            match = _LEFTOVER.fullmatch(path.name)
            if not match or match["name"] not in names[match["kind"]]:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
