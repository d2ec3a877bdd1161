"""Fault injection (issue 18, "results are never lost or mixed"): every command that writes,
on tiny data, under a full disk, a read-only file system, a second run into the same
folder, SIGINT and SIGTERM mid-run, and corrupted ``.pt`` files.

How the faults are made:

* **ENOSPC**: the Nth :func:`analysis.io.atomic_write` (every file the toolkit writes goes
  through it) gets ``/dev/full`` for its temporary file, so the kernel itself answers
  "No space left on device" to the write, as on a full disk.
* **EROFS**: the Nth atomic write is refused when its file is opened, as on a read-only
  file system; an unwritable ``--out`` is the lock file's creation refused the same way.
* **Signals**: ``signal.raise_signal`` at the Nth write delivers a real SIGINT or SIGTERM
  to this process while :func:`analysis.cli.main` runs; subprocesses (``DRIVER``) get them
  from outside while they wait at a write (landscape and probe: inside their computation),
  and race each other for one folder.

Every command runs on ``tests/conftest.py``'s tiny data set, and matplotlib's ``savefig``
writes a stub instead of drawing (the bytes still go through the atomic writer): the
drawing is not what these tests are about and takes seconds per figure.

After every fault the folder is checked by :func:`check_folder`: either the command's
completion marker and every file of one run (all from the run before the fault, or all
from one new run), or no marker; never a staging folder or a lock file left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import analysis.czsl.experiment as czsl_experiment
import analysis.cli
import analysis.experiment as train_experiment
import analysis.io
import analysis.output_folder
import figures.context
import figures.probe
import figures.registry
import landscape.comparison
import variance.cli
from analysis.checkpoint import load_checkpoint
from analysis.cli import Terminated, main
from analysis.output_folder import LOCK_NAME, STAGING_PREFIX, OutputFolder
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a real ENOSPC")


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    files: tuple[str, ...]  # every file one run publishes
    marker: str  # the completion marker (figures: the figure's entry in figures.json)
    last_write: int  # how many atomic writes one run makes
    last_file: str  # what the last one writes
    signal_at: int  # the write at which the in-process signal arrives


FIGURE = "attribute_statistics"
COMMANDS = {
    "train": Command(("train", "--epochs", "1", "--batch-size", "64", "--no-progress"),
                     ("config.json", "environment.json", "model.pt", "loss.png", "results.json"), "results.json",
                     last_write=5, last_file="results.json", signal_at=2),
    "czsl": Command(("czsl", "--method", "sequential", "--seeds", "1", "--tasks", "3", "--epochs-per-task", "1",
                     "--batch-size", "64", "--device", "cpu", "--no-progress"),
                    ("czsl.png", "czsl.json"), "czsl.json", last_write=2, last_file="czsl.json", signal_at=1),
    "landscape": Command(("landscape", "--models", "cn", "--epochs", "1", "--probe-every", "4", "--slice-points", "2",
                          "--device", "cpu", "--no-progress"),
                         ("trajectories.png", "slices.png", "landscape.json"), "landscape.json",
                         last_write=3, last_file="landscape.json", signal_at=2),
    "variance": Command(("variance", "--dataset", "CUB", "--num-inits", "2", "--width", "8"),
                        ("variance.json",), "variance.json", last_write=1, last_file="variance.json",
                        signal_at=1),
    "figures": Command(("figures", "--only", FIGURE, "--fast", "--datasets", "APY", "--device", "cpu",
                        "--no-progress"),
                       (f"{FIGURE}.png", f"{FIGURE}.pdf", "figures.json"), "figures.json",
                       last_write=3, last_file=f"{FIGURE}.pdf", signal_at=2),  # the cache, png, pdf, figures.json
    "probe": Command(("probe", "--model", f"{REPO}/examples/residual_layernorm.py:ResidualLayerNormEmbedder",
                      "--model-kwargs", '{"width": 16}', "--compare", "", "--epochs", "1", "--init-seeds", "2",
                      "--probe-every", "4", "--top-k", "1", "--trace-probes", "2", "--slq-probes", "1",
                      "--slq-steps", "4", "--slice-points", "2", "--probe-samples", "32", "--lanczos-steps", "4",
                      "--spectrum-steps", "4", "--device", "cpu", "--no-progress"),
                     ("probe.json", "probe.md", "probe.png", "probe.pdf"), "probe.json", last_write=4,
                     last_file="probe.pdf", signal_at=2),
}
SIGNALS = {"train": signal.SIGINT, "czsl": signal.SIGTERM, "landscape": signal.SIGINT, "variance": signal.SIGTERM,
           "figures": signal.SIGINT, "probe": signal.SIGTERM}  # the other one (landscape, probe: both): subprocesses
STATUS = {signal.SIGINT: (130, "Ctrl-C"), signal.SIGTERM: (143, "SIGTERM")}
NOTHING = "nothing was written {where} (a run's files appear there only when it finishes; the same command reruns it)"
PRINTED = "; the results printed above are this run's results"


def _stub_savefig(self, target, format="png", **kwargs):  # noqa: A002 - matplotlib's name
    target.write(f"stub {format}".encode())


@pytest.fixture
def tiny(monkeypatch, tiny_data):
    """Every command on the tiny data set, figures not drawn; ``tiny.loads`` counts the work done."""
    loads = []

    def load(*args, **kwargs):
        loads.append(args)
        return tiny_data

    for module in (train_experiment, czsl_experiment, landscape.comparison, figures.probe, figures.context):
        monkeypatch.setattr(module, "load_dataset", load)
    monkeypatch.setattr(variance.cli, "_load", load)
    monkeypatch.setattr(variance.cli, "training_rows", lambda **kwargs: [])  # its own fixed setting: seconds
    monkeypatch.setattr(Figure, "savefig", _stub_savefig)
    return loads


class OsWith:
    """The ``os`` module with some functions replaced (``OsWith(replace=fn)``): monkeypatched
    into a module to make one of its file operations fail or signal."""

    module = os

    def __init__(self, **replacements):
        self._replacements = replacements

    def __getattr__(self, name):
        return self._replacements[name] if name in self._replacements else getattr(self.module, name)


class ShutilWith(OsWith):
    """The ``shutil`` module with some functions replaced, as :class:`OsWith`."""

    module = shutil


class FaultyDisk(OsWith):
    """``analysis.io.os`` with the ``at``-th atomic write refused (``code``: ENOSPC from
    ``/dev/full``, or EROFS when the file is opened) or interrupted by the signal ``sig``."""

    def __init__(self, at: int, code: int | None = None, sig: int | None = None) -> None:
        super().__init__()
        self.at, self.code, self.sig, self.calls = at, code, sig, 0

    def fdopen(self, fd, mode="r"):
        self.calls += 1
        if self.calls != self.at:
            return os.fdopen(fd, mode)
        if self.sig is not None:
            os.close(fd)
            signal.raise_signal(self.sig)  # the handler raises here, inside the write
        os.close(fd)
        if self.code == errno.ENOSPC:
            return open("/dev/full", mode)  # the write (or its flush) fails with the kernel's ENOSPC
        raise OSError(self.code, os.strerror(self.code))


def snapshot(out: Path, command: Command) -> dict[str, tuple[int, int]]:
    """``{file: (inode, mtime)}`` of the command's files in ``out`` (a published file keeps the
    inode and mtime it was staged with: the same pair, the same run's file)."""
    return {name: _identity(out / name) for name in command.files if (out / name).exists()}


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns  # an inode is reused once a replaced file is gone: with its mtime


def has_marker(out: Path, command: Command) -> bool:
    if command.marker != "figures.json":
        return (out / command.marker).exists()
    log = out / "figures.json"
    return log.exists() and FIGURE in [row["name"] for row in json.loads(log.read_text())["figures"]]


def check_folder(out: Path, command: Command,
                 before: dict[str, tuple[int, int]] | None = None) -> dict[str, tuple[int, int]]:
    """The folder holds the marker and every file of one run, or no marker; no staging
    folder, no lock file.  ``before``: the snapshot of the run the fault interrupted."""
    if not out.exists():
        return {}
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX) or p.name == LOCK_NAME]
    assert leftovers == []
    now = snapshot(out, command)
    if has_marker(out, command):
        assert sorted(now) == sorted(command.files), "a marker beside a partial set of files"
        if before:
            same = {name for name in now if now[name] == before.get(name)}
            assert same in (set(), set(now)), f"files of two runs: {sorted(same)} old, the rest new"
        for name in now:
            if name.endswith(".json"):
                assert json.loads((out / name).read_text())["complete"] is True
    return now


def run(capsys, command: Command, out: Path, *extra: str) -> tuple[int, str, str]:
    status = main([*command.argv, *extra, "--out", str(out)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line(err: str) -> str:
    """The one line a failure prints (progress notes before it aside: variance's data sets,
    landscape's expected time, "cnzsl landscape: about ...")."""
    lines = [line for line in err.splitlines() if line.startswith("cnzsl:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def printed_results(name: str, stdout: str) -> None:
    """The command printed what the user needs (before writing)."""
    expected = {"train": "GZSL-H", "czsl": "sequential", "landscape": "median ||g||", "variance": "claims",
                "probe": "| ResidualLayerNormEmbedder |", "figures": f"[{FIGURE}]"}[name]
    assert expected in stdout, stdout


# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(name, tmp_path, tiny, capsys,
                                                                            monkeypatch):
    command = COMMANDS[name]
    (tmp_path / "notes.txt").write_text("mine")
    refusals = {
        "": "cnzsl: error: --out is empty; pass a folder for the results (it is created if missing)",
        str(tmp_path / "notes.txt"): f"--out {str(tmp_path / 'notes.txt')!r} is a file, not a folder",
        str(tmp_path / "notes.txt" / "sub"): "lies inside the file",
    }
    for out, message in refusals.items():
        status, _, err = run(capsys, command, Path(out) if out else "")
        assert status == 2 and message in one_line(err)

    def read_only(path, *args, **kwargs):  # the lock file cannot be created: a read-only file system
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(analysis.output_folder, "os", OsWith(open=read_only))
    out = tmp_path / "ro"
    status, _, err = run(capsys, command, out)
    assert not out.exists() and tiny == [] and (tmp_path / "notes.txt").read_text() == "mine"
    assert status == 2 and one_line(err) == (f"cnzsl: error: --out {str(out)!r} cannot be written (Read-only file "
                                             "system); choose a folder you can write to")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_full_disk_read_only_signal_lock_and_rerun(name, tmp_path, tiny, capsys, monkeypatch):
    """One command through every in-process fault, in one folder: nothing written after each,
    the rerun works, and a fault in an --overwrite run leaves the earlier run whole."""
    command, out = COMMANDS[name], tmp_path / "out"
    figures_only = name == "figures"
    nothing = NOTHING.format(where=f"to {out}")
    not_drawn = f"no figure was written to {out}; not written: {FIGURE}; make them with --only {FIGURE}"

    # (1) ENOSPC on the last write, every other file staged
    disk = FaultyDisk(command.last_write, errno.ENOSPC)
    monkeypatch.setattr(analysis.io, "os", disk)
    status, stdout, err = run(capsys, command, out)
    if not figures_only:
        printed_results(name, stdout)  # czsl, landscape and probe used to print nothing here
    tail = not_drawn if figures_only else f"nothing was written there{PRINTED}"
    assert status == 2 and one_line(err) == (f"cnzsl: error: could not write {command.last_file} in {out} (No space "
                                             f"left on device); {tail}")
    assert disk.calls == command.last_write
    assert check_folder(out, command) == {} and not has_marker(out, command)

    # (2) SIGINT or SIGTERM inside a write
    sig = SIGNALS[name]
    monkeypatch.setattr(analysis.io, "os", FaultyDisk(command.signal_at, sig=sig))
    status, stdout, err = run(capsys, command, out)
    code, label = STATUS[sig]
    tail = not_drawn if figures_only else nothing + PRINTED
    assert status == code and one_line(err) == f"cnzsl: interrupted ({label}); {tail}"
    assert check_folder(out, command) == {} and not has_marker(out, command)

    # (3) the rerun into the same folder, without --overwrite
    monkeypatch.setattr(analysis.io, "os", os)
    status, stdout, err = run(capsys, command, out)
    assert status == 0 and not [line for line in err.splitlines() if line.startswith("cnzsl:")], err
    printed_results(name, stdout)
    first = check_folder(out, command)
    assert has_marker(out, command) and sorted(first) == sorted(command.files)

    # (4) a second run while the folder is locked (in-process here; subprocesses below)
    with OutputFolder(out, ("other.json",)) as held:
        status, _, err = run(capsys, command, out, "--overwrite")
        held.stage("other.json").write_text("{}")
    assert status == 2 and f"{out} is in use by another cnzsl run (pid {os.getpid()})" in one_line(err)
    (out / "other.json").unlink()

    # (5) EROFS on the first write of an --overwrite run: the earlier run stays whole
    monkeypatch.setattr(analysis.io, "os", FaultyDisk(1, errno.EROFS))
    status, stdout, err = run(capsys, command, out, "--overwrite")
    first_file = {"train": "config.json", "czsl": "czsl.png", "landscape": "trajectories.png",
                  "variance": "variance.json", "probe": "probe.json", "figures": f"data/{FIGURE}.json"}[name]
    tail = (f"no figure was written to {out}; not written: {FIGURE}; make them with --only {FIGURE}"
            if figures_only else f"nothing was written there{PRINTED}")
    assert status == 2 and one_line(err) == (f"cnzsl: error: could not write {first_file} in {out} (Read-only "
                                             f"file system); {tail}")
    assert check_folder(out, command, before=first) == first  # the earlier run, untouched


def test_a_failed_publish_never_leaves_a_marker_beside_mixed_files(tmp_path, tiny, capsys, monkeypatch):
    """A move that fails midway through an --overwrite publish (the disk turned read-only):
    the old marker is gone, so the mix of old and new files is recognisably incomplete."""
    command, out = COMMANDS["train"], tmp_path / "out"
    assert run(capsys, command, out)[0] == 0
    first = check_folder(out, command)
    moves = []

    def failing_second_move(src, dst):
        moves.append(dst)
        if len(moves) == 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        os.replace(src, dst)

    monkeypatch.setattr(analysis.output_folder, "os", OsWith(replace=failing_second_move))
    status, _, err = run(capsys, command, out, "--overwrite")
    assert status == 2 and one_line(err) == (
        f"cnzsl: error: could not write environment.json in {out} (Read-only file system); {out} is left "
        f"incomplete, without its results file; rerun with --overwrite{PRINTED}")
    assert not has_marker(out, command)
    check_folder(out, command, before=first)
    monkeypatch.setattr(analysis.output_folder, "os", os)
    assert run(capsys, command, out, "--overwrite")[0] == 0
    check_folder(out, command, before=first)


def test_a_failed_first_publish_takes_its_files_back_and_the_rerun_needs_no_overwrite(tmp_path, tiny, capsys,
                                                                                      monkeypatch):
    command, out = COMMANDS["czsl"], tmp_path / "out"

    def failing_marker_move(src, dst):
        if Path(dst).name == command.marker:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        os.replace(src, dst)

    monkeypatch.setattr(analysis.output_folder, "os", OsWith(replace=failing_marker_move))
    status, _, err = run(capsys, command, out)
    assert check_folder(out, command) == {}  # czsl.png, moved before the marker failed, was taken back
    assert status == 2 and one_line(err).endswith(f"nothing was written there{PRINTED}")
    monkeypatch.setattr(analysis.output_folder, "os", os)
    assert run(capsys, command, out)[0] == 0 and has_marker(out, command)


def test_a_signal_during_the_publish_waits_for_it_and_says_the_folder_is_complete(tmp_path, tiny, capsys,
                                                                                monkeypatch):
    command, out = COMMANDS["train"], tmp_path / "out"

    def signal_during_moves(src, dst):
        signal.raise_signal(signal.SIGINT)  # held back until every move ran
        os.replace(src, dst)

    monkeypatch.setattr(analysis.output_folder, "os", OsWith(replace=signal_during_moves))
    status, _, err = run(capsys, command, out)
    assert status == 130
    assert one_line(err) == f"cnzsl: interrupted (Ctrl-C) as the run finished: {out} holds all of its files"
    assert has_marker(out, command) and sorted(check_folder(out, command)) == sorted(command.files)


class SecondSignal:
    """Replacements that deliver ``sig`` once, inside the cleanup step they stand for, before
    doing the step; ``done`` lists the steps that ran to their end."""

    def __init__(self, sig: int) -> None:
        self.sig, self.sent, self.done = sig, False, []

    def _once(self) -> None:
        if not self.sent:
            self.sent = True
            signal.raise_signal(self.sig)

    def rmtree(self, path, *args, **kwargs):  # the staging folder's removal
        if Path(path).name.startswith(STAGING_PREFIX):
            self._once()
        shutil.rmtree(path, *args, **kwargs)
        self.done.append("rmtree")

    def close(self, fd):  # the lock's release (the only os.close of analysis.output_folder)
        self._once()
        os.close(fd)
        self.done.append("close")

    def path(self) -> type:  # analysis.io's Path, whose unlink removes a write's temporary file
        second = self

        class PathWith(type(Path())):
            def unlink(self, missing_ok=False):
                if not self.name.endswith(".tmp"):  # the lock file: check_output_folder made out a PathWith
                    return super().unlink(missing_ok=missing_ok)
                second._once()
                super().unlink(missing_ok=missing_ok)
                second.done.append("unlink")

        return PathWith

    def print(self, *args, **kwargs):  # the last line (not the results printed before it)
        if args and str(args[0]).lstrip().startswith("cnzsl:"):
            self._once()
            print(*args, **kwargs)
            self.done.append("print")
        else:
            print(*args, **kwargs)


def run_to_its_end(capsys, command: Command, out: Path) -> tuple[int, str, str]:
    """:func:`run`, with an interrupt that escapes :func:`main` (a traceback) failing the test
    instead of stopping pytest."""
    try:
        return run(capsys, command, out)
    except (KeyboardInterrupt, Terminated) as escaped:
        pytest.fail(f"{escaped!r} escaped main(): a traceback instead of the one line")


@pytest.mark.parametrize(("name", "at"), [("train", "staging folder"), ("train", "lock"), ("train", "last line"),
                                          ("czsl", "staging folder"), ("czsl", "unwinding"),
                                          ("figures", "staging folder"), ("figures", "lock")])
def test_a_second_ctrl_c_during_the_cleanup_waits_for_it_and_the_line_says_so(name, at, tmp_path, tiny, capsys,
                                                                           monkeypatch):
    """The first signal inside a write, a second Ctrl-C inside the cleanup that follows it:
    it used to leave the staging folder (and the folder the run created) or the lock file
    behind, and inside the last line's print to end with a traceback.  Now the cleanup runs
    to its end, the status and the line are the first signal's, one line above says so.
    ("unwinding": the second arrives before the cleanup, as the write removes its temporary
    file; it is not held there, but the first signal still names the ending.)"""
    command, out = COMMANDS[name], tmp_path / "out"
    first = SIGNALS[name]  # SIGTERM for czsl: the status stays the first signal's
    monkeypatch.setattr(analysis.io, "os", FaultyDisk(command.signal_at, sig=first))
    second = SecondSignal(signal.SIGINT)
    if at == "staging folder":
        module = figures.registry if name == "figures" else analysis.output_folder
        monkeypatch.setattr(module, "shutil", ShutilWith(rmtree=second.rmtree))
    elif at == "lock":
        monkeypatch.setattr(analysis.output_folder, "os", OsWith(close=second.close))
    elif at == "unwinding":
        monkeypatch.setattr(analysis.io, "Path", second.path())
    else:
        monkeypatch.setattr(analysis.cli, "print", second.print, raising=False)
    status, _, err = run_to_its_end(capsys, command, out)
    steps = {"staging folder": ["rmtree"], "lock": ["close"], "last line": ["print"], "unwinding": []}
    assert second.sent and second.done == steps[at]  # unwinding: cut short, the staging folder removes the file
    code, label = STATUS[first]
    tail = (f"no figure was written to {out}; not written: {FIGURE}; make them with --only {FIGURE}"
            if name == "figures" else NOTHING.format(where=f"to {out}") + PRINTED)
    lines = [line for line in err.splitlines() if line.startswith("cnzsl")]
    note = [] if at == "last line" else [
        "cnzsl: interrupted again (Ctrl-C) while cleaning up; the cleanup ran to its end"]
    assert status == code and "Traceback" not in err
    assert lines == [*note, f"cnzsl: interrupted ({label}); {tail}"]
    assert check_folder(out, command) == {} and not has_marker(out, command)  # no staging folder, no lock file
    assert name == "figures" or not out.exists()  # the folder the run created, removed (figures: its cache stays)
    monkeypatch.setattr(analysis.io, "os", os)  # the rerun, without faults
    monkeypatch.setattr(analysis.output_folder, "os", os)
    monkeypatch.setattr(analysis.output_folder, "shutil", shutil)
    monkeypatch.setattr(figures.registry, "shutil", shutil)
    monkeypatch.setattr(analysis.io, "Path", Path)
    monkeypatch.delattr(analysis.cli, "print", raising=False)
    assert run(capsys, command, out)[0] == 0


def test_a_signal_during_the_cleanup_after_the_publish_says_the_folder_is_complete(tmp_path, tiny, capsys,
                                                                                  monkeypatch):
    """The files are in place when the staging folder is removed: the signal held back meanwhile
    is answered once the cleanup ended, as one held back during the moves."""
    command, out = COMMANDS["train"], tmp_path / "out"
    second = SecondSignal(signal.SIGTERM)
    monkeypatch.setattr(analysis.output_folder, "shutil", ShutilWith(rmtree=second.rmtree))
    status, _, err = run_to_its_end(capsys, command, out)
    assert second.done == ["rmtree"] and status == 143
    assert one_line(err) == f"cnzsl: interrupted (SIGTERM) as the run finished: {out} holds all of its files"
    assert has_marker(out, command) and sorted(check_folder(out, command)) == sorted(command.files)


def test_sigterm_is_not_taken_for_an_error_by_an_except_exception(monkeypatch, capsys):
    """Code on the way may catch Exception (reading a cache, calling a user's model); SIGTERM
    used to be an Exception there, swallowed, and the run went on."""
    import analysis.cli

    def handler(args):
        try:
            signal.raise_signal(signal.SIGTERM)
        except Exception:  # noqa: BLE001 - what the test is about
            return 0
        return 0

    monkeypatch.setattr(analysis.cli, "_train", handler)
    assert main(["train", "--out", "never-written"]) == 143
    assert one_line(capsys.readouterr().err).startswith("cnzsl: interrupted (SIGTERM); nothing was written")


def test_figures_publish_figure_by_figure_and_a_later_fault_keeps_the_earlier_ones(tmp_path, tiny, capsys,
                                                                                  monkeypatch):
    """Two figures; ENOSPC on the second figure's PDF: the first is complete and listed, the
    second absent, its (complete) cache recomputed by the rerun without --overwrite."""
    out = tmp_path / "figs"
    argv = ["figures", "--only", FIGURE, "training_time", "--fast", "--datasets", "APY", "--device", "cpu",
            "--no-progress", "--out", str(out)]
    monkeypatch.setattr(analysis.io, "os", FaultyDisk(7, errno.ENOSPC))  # 4 of the first figure, cache, png, pdf
    assert main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert err == (f"cnzsl: error: could not write training_time.pdf in {out} (No space left on device); {FIGURE} "
                   f"written to {out} (listed in figures.json); not written: training_time; make them with "
                   f"--only training_time")
    log = json.loads((out / "figures.json").read_text())
    assert [row["name"] for row in log["figures"]] == [FIGURE]
    assert sorted(p.name for p in out.iterdir()) == ["attribute_statistics.pdf", "attribute_statistics.png",
                                                     "data", "figures.json"]
    monkeypatch.setattr(analysis.io, "os", os)
    assert main(argv[:2] + argv[3:]) == 0  # --only training_time: its cache alone is not refused
    log = json.loads((out / "figures.json").read_text())
    assert [row["name"] for row in log["figures"]] == [FIGURE, "training_time"]
    assert (out / "training_time.pdf").exists()


def test_a_redrawn_figure_never_stands_beside_its_old_entry(tmp_path, tiny, capsys, monkeypatch):
    """An --overwrite redraw that fails at the PDF used to leave the new PNG beside the old PDF
    under the old entry in figures.json: complete-looking, and mixed.  Now the figure's files
    are staged (a failed write publishes nothing), and its entry goes before its files move
    (a failed move leaves no entry)."""
    out = tmp_path / "figs"
    command = COMMANDS["figures"]
    assert run(capsys, command, out)[0] == 0
    first = check_folder(out, command)
    monkeypatch.setattr(analysis.io, "os", FaultyDisk(2, errno.ENOSPC))  # --plot-only writes: png, pdf, log
    assert run(capsys, command, out, "--plot-only", "--overwrite")[0] == 2
    assert check_folder(out, command, before=first) == first
    monkeypatch.setattr(analysis.io, "os", os)

    def failing_pdf_move(src, dst):
        if Path(dst).suffix == ".pdf":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        os.replace(src, dst)

    monkeypatch.setattr(analysis.output_folder, "os", OsWith(replace=failing_pdf_move))
    assert run(capsys, command, out, "--plot-only", "--overwrite")[0] == 2
    assert not has_marker(out, command)  # the PNG is new, the PDF old: and no entry says otherwise
    check_folder(out, command, before=first)


# --------------------------------------------------------------------------- subprocesses
DRIVER = """
import atexit, importlib, os, signal, sys, time
import analysis.experiment, analysis.czsl.experiment, analysis.io, figures.context, figures.probe
import landscape.comparison, variance.cli
from matplotlib.figure import Figure
from analysis.cli import main
from analysis.synthetic import make_synthetic
from tests.conftest import TINY_SPEC

tiny = make_synthetic(TINY_SPEC, seed=0)
for module in (analysis.experiment, analysis.czsl.experiment, figures.context, figures.probe, landscape.comparison):
    module.load_dataset = lambda *args, **kwargs: tiny
variance.cli._load = lambda *args, **kwargs: tiny
variance.cli.training_rows = lambda **kwargs: []
Figure.savefig = lambda self, f, format="png", **kwargs: f.write(b"stub")
gate, at, start = sys.argv[1], sys.argv[2], sys.argv[3]


def wait_at_gate():  # the lock held, until the file `gate` exists
    open(gate + ".waiting", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)


class Gated:  # the at-th atomic write waits at the gate
    calls = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="r"):
        Gated.calls += 1
        if str(Gated.calls) == at:
            wait_at_gate()
        return os.fdopen(fd, mode)


def gated(function):  # its first call waits at the gate
    calls = []

    def first_call_waits(*args, **kwargs):
        if not calls:
            calls.append(1)
            wait_at_gate()
        return function(*args, **kwargs)
    return first_call_waits


if ":" in at:  # MODULE:FUNCTION, a point inside a command's long phase
    module, function = at.split(":")
    module = importlib.import_module(module)
    setattr(module, function, gated(getattr(module, function)))
else:
    analysis.io.os = Gated()


def ctrl_c_at_exit():  # the first of the exit hooks (torch's, multiprocessing's: registered before)
    signal.raise_signal(signal.SIGINT)
    open(gate + ".exited", "w").close()


if os.environ.get("DRIVER_CTRL_C_AT_EXIT"):
    atexit.register(ctrl_c_at_exit)
deadline = time.monotonic() + 60
while start and not os.path.exists(start) and time.monotonic() < deadline:  # imported: wait for the go
    time.sleep(0.02)
sys.argv[1:] = sys.argv[4:]  # main() reads them there, as the cnzsl console script's does
sys.exit(main())
"""


def start(tmp_path: Path, name: str, out: Path, at: int | str, gate: str = "gate", go: str = "",
          ctrl_c_at_exit: bool = False) -> subprocess.Popen:
    """``cnzsl NAME`` in a subprocess (``DRIVER``, the ``tiny`` fixture's stand-ins) that waits
    at its ``at``-th write (or, ``at="MODULE:FUNCTION"``, at that function's first call) until
    ``tmp_path/gate`` exists (after creating ``gate.waiting``) and, with ``go``, waits before
    starting until ``tmp_path/go`` exists.  ``ctrl_c_at_exit``: a SIGINT arrives in the
    interpreter's exit hooks, after ``main()`` returned (``gate.exited`` once the hook ran)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **({"DRIVER_CTRL_C_AT_EXIT": "1"} if ctrl_c_at_exit else {})}
    argv = [sys.executable, "-c", DRIVER, str(tmp_path / gate), str(at), str(tmp_path / go) if go else "",
            *COMMANDS[name].argv, "--out", str(out)]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180  # generous: start-ups overlap on two busy cores
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its write"
        time.sleep(0.05)


def test_two_processes_into_one_folder_exactly_one_succeeds(tmp_path, tiny, capsys):
    command, out = COMMANDS["train"], tmp_path / "out"
    first = start(tmp_path, "train", out, at=3)  # waits at its third write, two files staged
    second = start(tmp_path, "train", out, at=0, gate="never", go="go")  # imports meanwhile
    wait_for(tmp_path / "gate.waiting", first)
    (tmp_path / "go").touch()
    _, err = second.communicate(timeout=120)
    (tmp_path / "gate").touch()
    _, first_err = first.communicate(timeout=120)
    assert (first.returncode, second.returncode) == (0, 2), (first_err, err)
    assert one_line(err) == (f"cnzsl: error: {out} is in use by another cnzsl run (pid {first.pid}); wait for it to "
                             "finish or choose another --out folder")
    assert sorted(check_folder(out, command)) == sorted(command.files)
    # and once it is done: the other message, the results it would have replaced
    status, _, err = run(capsys, command, out)
    assert status == 2 and "already holds results.json" in one_line(err)


def check_stopped_then_rerun(capsys, name: str, proc: subprocess.Popen, out: Path, sig: int,
                             printed: bool = True) -> None:
    """``proc`` (``cnzsl NAME --out out``, sent ``sig``) ended with the signal's status and
    one line, no traceback, nothing left in ``out``; then the same command reruns there.
    ``printed``: the command had printed its results before the signal."""
    command = COMMANDS[name]
    _, err = proc.communicate(timeout=300)
    code, label = STATUS[sig]
    assert proc.returncode == code, (name, err)
    if name == "figures":
        expected = f"no figure was written to {out}; not written: {FIGURE}; make them with --only {FIGURE}"
    else:
        expected = NOTHING.format(where=f"to {out}") + (PRINTED if printed else "")
    assert one_line(err) == f"cnzsl: interrupted ({label}); {expected}", name
    assert check_folder(out, command) == {} and not has_marker(out, command)
    status, _, err = run(capsys, command, out)
    assert status == 0, (name, err)
    assert sorted(check_folder(out, command)) == sorted(command.files)  # and no staging folder left


def test_a_signal_from_outside_mid_run_writes_nothing_and_the_rerun_works(tmp_path, tiny, capsys):
    """train, czsl, variance and figures in subprocesses, all at once (their start-ups
    overlap), each sent the signal its in-process test does not raise while it waits at a
    write with its lock held; then the rerun into the same folder.  (landscape and probe:
    both signals, in their long phase, in the next test.)"""
    outside = {name: signal.SIGTERM if sig == signal.SIGINT else signal.SIGINT for name, sig in SIGNALS.items()
               if name in ("train", "czsl", "variance", "figures")}
    procs = {}
    for name in outside:
        (tmp_path / name).mkdir()
        procs[name] = start(tmp_path / name, name, tmp_path / name / "out", at=COMMANDS[name].signal_at)
    for name, proc in procs.items():
        wait_for(tmp_path / name / "gate.waiting", proc)
        proc.send_signal(outside[name])
    for name, proc in procs.items():  # every command prints before writing
        check_stopped_then_rerun(capsys, name, proc, tmp_path / name / "out", outside[name])


LONG_PHASE = {"landscape": "landscape.comparison:loss_slice_2d", "probe": "figures.probe_battery:loss_slice_2d"}


@pytest.mark.parametrize("name", list(LONG_PHASE))
def test_sigint_and_sigterm_from_outside_in_the_long_phase_write_nothing_and_the_rerun_works(name, tmp_path, tiny,
                                                                                           capsys):
    """landscape and probe, each in two subprocesses at once, stopped from outside while they
    compute (at the first loss slice: the models trained and their trajectories probed,
    nothing printed or written yet), one with SIGINT, one with SIGTERM; then the rerun."""
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        folder = tmp_path / sig.name
        folder.mkdir()
        procs[sig] = start(folder, name, folder / "out", at=LONG_PHASE[name])
    for sig, proc in procs.items():
        wait_for(tmp_path / sig.name / "gate.waiting", proc)
        out = tmp_path / sig.name / "out"  # mid-run: the lock held, the staging folder there, no file published
        assert (out / LOCK_NAME).exists() and len(list(out.glob(f"{STAGING_PREFIX}*"))) == 1
        assert snapshot(out, COMMANDS[name]) == {}
        proc.send_signal(sig)
    for sig, proc in procs.items():
        check_stopped_then_rerun(capsys, name, proc, tmp_path / sig.name / "out", sig, printed=False)


def test_a_second_ctrl_c_while_the_process_exits_is_no_traceback(tmp_path, tiny, capsys):
    """After the line, the interpreter's exit runs torch's and multiprocessing's exit hooks;
    a second Ctrl-C there used to print "Exception ignored in atexit callback" and a traceback
    (or, later in the exit, kill the process by SIGINT).  The command's status is decided
    then: the process ignores both signals from there on."""
    command, out = COMMANDS["train"], tmp_path / "out"
    proc = start(tmp_path, "train", out, at=command.signal_at, ctrl_c_at_exit=True)
    wait_for(tmp_path / "gate.waiting", proc)
    proc.send_signal(signal.SIGTERM)
    check_stopped_then_rerun(capsys, "train", proc, out, signal.SIGTERM)  # 143, the one line, no traceback
    assert (tmp_path / "gate.exited").exists()  # the exit hooks ran to their end


# ------------------------------------------------------------------------- corrupted .pt
def test_a_flipped_byte_or_random_bytes_in_model_pt_is_a_one_line_error(tmp_path, tiny, capsys):
    out = tmp_path / "out"
    assert run(capsys, COMMANDS["train"], out)[0] == 0
    model, _ = load_checkpoint(out / "model.pt")
    raw = bytearray((out / "model.pt").read_bytes())
    weight = max(model.parameters(), key=lambda p: p.numel()).detach().contiguous()
    at = raw.find(weight.numpy().tobytes()[:64])
    assert at > 0
    raw[at + 5] ^= 0x10
    (out / "model.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="is corrupted: its tensors do not match the sha256") as info:
        load_checkpoint(out / "model.pt")
    assert "\n" not in str(info.value)
    for seed in range(10):  # seeded random bytes: torch raises several types on them
        (out / "model.pt").write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(ValueError, match="is not a checkpoint") as info:
            load_checkpoint(out / "model.pt")
        assert "\n" not in str(info.value)


def test_a_flipped_byte_in_the_figures_model_cache_is_discarded_not_drawn(tmp_path, capsys):
    """The loss-surface figures' model cache (data/landscape_models_seed*.pt) used to load a
    changed weight silently: the figures would have shown another model."""
    from figures import landscape_models

    key = {"format": landscape_models.CACHE_FORMAT, "seed": 1}
    states = {name: {"weight": torch.arange(64, dtype=torch.float32) * (i + 2)}
              for i, name in enumerate(landscape_models.MODELS)}
    from analysis.checkpoint import state_digest

    payload = {"key": json.dumps(key, sort_keys=True), "models": states, "trajectories": {}, "histories": {},
               "state_sha256": {name: state_digest(state) for name, state in states.items()}}
    path = tmp_path / "landscape_models_seed1.pt"
    torch.save(payload, path)
    assert landscape_models._read_cache(path, key) is not None
    raw = bytearray(path.read_bytes())
    at = raw.find(states["zsl_cn"]["weight"].numpy().tobytes())
    raw[at + 9] ^= 0x01
    path.write_bytes(bytes(raw))
    assert landscape_models._read_cache(path, key) is None
    err = one_line(capsys.readouterr().err)
    assert err == (f"cnzsl: discarding the model cache {path}: its tensors do not match the sha256 stored when it "
                   "was written (a changed byte); retraining")
    # random bytes make torch's weights-only unpickler raise various types (IndexError, KeyError,
    # UnpicklingError...): a run of seeds, so that the test does not depend on the draw
    for seed in range(20):
        path.write_bytes(np.random.default_rng(seed).bytes(2048))
        assert landscape_models._read_cache(path, key) is None, seed
        assert one_line(capsys.readouterr().err).startswith(
            f"cnzsl: discarding the model cache {path}: it cannot be read"), seed
