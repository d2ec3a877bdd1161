"""SIGINT and SIGTERM held back during a cleanup (analysis/interrupts.py); the commands' own
cleanups under a second Ctrl-C are in tests/test_fault_injection.py."""

from __future__ import annotations

import signal
import threading

import pytest

from analysis.interrupts import HELD_SIGNALS, signals_held


def handlers() -> dict[int, object]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def test_signals_during_a_cleanup_after_an_error_are_noted_on_it_and_the_cleanup_ends() -> None:
    before, steps = handlers(), []
    error = RuntimeError("the run failed")
    with signals_held(error):
        signal.raise_signal(signal.SIGINT)
        steps.append("removed the staging folder")
        signal.raise_signal(signal.SIGTERM)
        steps.append("released the lock")
    assert steps == ["removed the staging folder", "released the lock"]
    assert getattr(error, HELD_SIGNALS) == [signal.SIGINT, signal.SIGTERM]
    assert handlers() == before


def test_an_exception_raised_by_the_block_gets_the_signals_that_arrived_before_it() -> None:
    with pytest.raises(OSError, match="disk full") as info, signals_held():
        signal.raise_signal(signal.SIGINT)
        raise OSError("disk full")
    assert getattr(info.value, HELD_SIGNALS) == [signal.SIGINT]


def test_without_an_exception_the_first_signal_is_answered_when_the_block_ends() -> None:
    before, steps = handlers(), []
    with pytest.raises(KeyboardInterrupt):  # the handler that was there before: Python's default
        with signals_held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            steps.append("released the lock")
    assert steps == ["released the lock"] and handlers() == before


def test_outside_the_main_thread_the_block_runs_as_it_is() -> None:
    seen = []

    def cleanup() -> None:
        with signals_held():  # signal.signal() would raise ValueError in this thread
            seen.append(handlers())

    thread = threading.Thread(target=cleanup)
    thread.start()
    thread.join()
    assert seen == [handlers()]
