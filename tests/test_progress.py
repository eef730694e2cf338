"""Ctrl-C is never lost, even when Python's own KeyboardInterrupt is swallowed."""

from __future__ import annotations

import signal

import pytest

from hypermosaic.progress import Progress, report, sigint_recorded


def _swallowed_interrupt() -> None:
    """What a garbage-collector callback does with an exception: print it and go on."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass


def test_an_interrupt_swallowed_by_a_callback_is_raised_by_the_next_report():
    seen: list[Progress] = []
    with sigint_recorded():
        report(seen.append, "nodes", 1, 10)
        _swallowed_interrupt()
        with pytest.raises(KeyboardInterrupt):
            report(seen.append, "nodes", 2, 10)
    assert seen == [Progress("nodes", 1, 10)]


def test_the_record_ends_with_the_command_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with sigint_recorded():
        _swallowed_interrupt()
    assert signal.getsignal(signal.SIGINT) is before
    report(None, "nodes", 1, 1)  # a later command starts afresh
