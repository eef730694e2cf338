"""Progress bars for every command: one rich bar per unit of `hypermosaic.progress.Progress`.

A bar appears with the first event of its unit (bad input, refused before any work, prints
its one line without a bar), shows done of total, the rate of what this run computed (resumed
work excluded), the ETA and the time elapsed, and stays on screen when the command ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars
from rich.text import Text

from hypermosaic.progress import Progress, ProgressCallback

__all__ = ["console", "progress_bars"]


def console() -> Console:
    """The console commands report on: stderr, so that stdout stays for results."""
    return Console(stderr=True)


class _Rate(ProgressColumn):
    """Units per second over this run, skipped (resumed) ones excluded."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        computed = task.completed - task.fields.get("skipped", 0)
        rate = computed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.1f} {task.description}/s")


@contextmanager
def progress_bars(out: Console) -> Iterator[ProgressCallback]:
    """A `ProgressCallback` drawing on ``out``; the bars stop when the block ends."""
    bars = Bars(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
        TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
        console=out, transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(event: Progress) -> None:
        if event.unit not in tasks:
            if not tasks:
                bars.start()
            tasks[event.unit] = bars.add_task(event.unit, total=event.total,
                                              skipped=event.skipped)
            if event.note:
                bars.console.print(event.note, soft_wrap=True)
        bars.update(tasks[event.unit], completed=event.done, total=event.total)

    try:
        yield on_progress
    finally:
        if tasks:  # a bar was drawn (stopping an unstarted display prints a blank line)
            bars.stop()
