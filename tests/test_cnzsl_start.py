"""The console script's launcher (cnzsl_start.py): a signal while the toolkit loads ends
the process with the commands' one line and 128 + the signal's number, not a traceback."""

from __future__ import annotations

import os
import signal
import types

import pytest

import cnzsl_start


class _Loading(types.ModuleType):
    """Stands in for ``analysis.cli`` while it loads: reading ``main`` runs ``on_load`` first."""

    def __init__(self, on_load, status: int = 0) -> None:
        super().__init__("analysis.cli")
        self._on_load, self._status = on_load, status

    def __getattr__(self, name: str):
        if name != "main":
            raise AttributeError(name)
        self._on_load()
        return lambda: self._status


@pytest.mark.parametrize(("sig", "status", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_while_the_toolkit_loads_gives_one_line_and_its_status(sig, status, name, monkeypatch, capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setitem(__import__("sys").modules, "analysis.cli", _Loading(lambda: os.kill(os.getpid(), sig), 0))
    assert cnzsl_start.main() == status
    assert capsys.readouterr().err == f"cnzsl: interrupted ({name}) while starting; nothing was run or written\n"
    assert {s: signal.getsignal(s) for s in before} == before  # the toolkit's own handling takes over


def test_without_a_signal_the_command_runs_with_the_handlers_it_found(monkeypatch):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = {}

    def run_main():
        seen.update({s: signal.getsignal(s) for s in before})
        return 7

    module = types.ModuleType("analysis.cli")
    module.main = run_main
    monkeypatch.setitem(__import__("sys").modules, "analysis.cli", module)
    assert cnzsl_start.main() == 7
    assert seen == before


def test_an_ignored_sigint_stays_ignored(monkeypatch):
    # a background job of a non-interactive shell starts with SIGINT ignored: a Ctrl-C meant
    # for the shell must not stop it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        monkeypatch.setitem(__import__("sys").modules, "analysis.cli",
                            _Loading(lambda: os.kill(os.getpid(), signal.SIGINT), 5))
        assert cnzsl_start.main() == 5
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
