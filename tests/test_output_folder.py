"""The output-folder protocol (analysis/output_folder.py): locked, staged, published together,
and left as it was by an error, Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.output_folder import STAGING_PREFIX, OutputFolder, OutputFolderBusy

NAMES = ("config.json", "model.pt", "results.json")


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fill(folder: OutputFolder, tag: str, names: tuple[str, ...] = NAMES) -> None:
    for name in names:
        folder.stage(name).write_text(tag)


def test_files_appear_together_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with OutputFolder(out, NAMES) as folder:
        fill(folder, "new")
        assert visible(out) == []  # nothing published while the run works
        assert folder.staging is not None and folder.staging.parent == out
    assert visible(out) == list(NAMES) and hidden(out) == []
    assert all((out / n).read_text() == "new" for n in NAMES)


@pytest.mark.parametrize("stop", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_unfinished_run_leaves_the_folder_as_it_was_and_a_rerun_works(tmp_path: Path, stop: BaseException) -> None:
    out = tmp_path / "run"
    with pytest.raises(type(stop)):
        with OutputFolder(out, NAMES) as folder:
            fill(folder, "partial", NAMES[:2])
            raise stop
    assert not out.exists()  # the run created the folder: it is removed with everything in it
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(type(stop)):
        with OutputFolder(out, NAMES) as folder:
            fill(folder, "partial", NAMES[:2])
            raise stop
    assert visible(out) == ["notes.txt"] and hidden(out) == []  # an existing folder stays
    with OutputFolder(out, NAMES) as folder:  # no --overwrite needed: nothing was written
        fill(folder, "rerun")
    assert (out / "results.json").read_text() == "rerun"


def test_a_second_run_into_a_locked_folder_stops_at_once(tmp_path: Path) -> None:
    with OutputFolder(tmp_path, NAMES) as first:
        with pytest.raises(OutputFolderBusy, match=rf"in use by another cnzsl run \(pid {os.getpid()}\)"):
            with OutputFolder(tmp_path, NAMES):
                pass
        fill(first, "first")
    with OutputFolder(tmp_path, NAMES, overwrite=True) as folder:  # released with the first
        fill(folder, "x")


def test_existing_results_are_refused_and_overwrite_replaces_all_of_them(tmp_path: Path) -> None:
    with OutputFolder(tmp_path, NAMES) as folder:
        fill(folder, "old")
    with pytest.raises(FileExistsError, match="already holds config.json, model.pt, results.json"):
        OutputFolder(tmp_path, NAMES).__enter__()
    with OutputFolder(tmp_path, NAMES, overwrite=True) as folder:
        fill(folder, "new", ("config.json", "results.json"))  # a run may publish fewer files
    assert [(tmp_path / n).read_text() for n in NAMES] == ["new", "old", "new"]


def test_a_publish_that_fails_midway_never_leaves_an_old_marker_beside_new_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OutputFolder(tmp_path, NAMES) as folder:
        fill(folder, "old")
    real_replace, calls = os.replace, []

    def disk_full_on_second_move(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full_on_second_move)
    with pytest.raises(OSError, match="No space left"):
        with OutputFolder(tmp_path, NAMES, overwrite=True) as folder:
            fill(folder, "new")
    monkeypatch.undo()
    assert calls[0].name == "results.json" or not (tmp_path / "results.json").exists()
    # config.json is new, model.pt old, and no results.json: recognisably incomplete, not mixed
    assert visible(tmp_path) == ["config.json", "model.pt"]
    assert (tmp_path / "config.json").read_text() == "new"


def test_staging_left_by_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    (tmp_path / f"{STAGING_PREFIX}dead").mkdir()
    (tmp_path / f"{STAGING_PREFIX}dead" / "results.json").write_text("half")
    with OutputFolder(tmp_path, NAMES) as folder:
        fill(folder, "x")
    assert hidden(tmp_path) == []


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--out is empty"):
        OutputFolder("", NAMES)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "f", NAMES)
    with pytest.raises(ValueError, match="marker 'done' is not one of"):
        OutputFolder(tmp_path, NAMES, marker="done")
    with OutputFolder(tmp_path, NAMES) as folder:
        with pytest.raises(ValueError, match="'other.json' is not one of the run's declared files"):
            folder.stage("other.json")
        folder.stage("results.json").write_text("x")
    with pytest.raises(RuntimeError, match="no results.json"):
        with OutputFolder(tmp_path / "b", NAMES) as folder:
            folder.stage("config.json").write_text("x")
    assert not (tmp_path / "b").exists()


def test_train_refuses_an_empty_out_and_a_busy_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--epochs", "1", "--out", "", "--no-progress"]) == 2
    assert "--out is empty" in capsys.readouterr().err
    with OutputFolder(tmp_path, NAMES) as held:
        assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 2
        fill(held, "x")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another cnzsl run" in err[0]


@pytest.mark.parametrize(("sig", "status", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signalled_train_writes_nothing_and_the_rerun_works(tmp_path: Path, sig: int, status: int, name: str) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "analysis", "train", "--dataset", "AWA1", "--epochs", "200", "--no-progress",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(f"{STAGING_PREFIX}*")) and time.monotonic() < deadline:  # the run has started
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.strip().splitlines() == [f"cnzsl: interrupted ({name}); nothing was written to {out} (a run's "
                                        "files appear there only when it finishes; the same command reruns it)"]
    assert not out.exists()  # created by the run, removed with it
    assert main(["train", "--dataset", "AWA1", "--epochs", "1", "--no-progress", "--no-save-model",
                 "--out", str(out)]) == 0
    assert "results.json" in visible(out)


def test_a_full_disk_after_training_prints_the_metrics_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import analysis.experiment as experiment

    def disk_full(path, fig, dpi=120):  # the first file after the JSONs and the checkpoint
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(experiment, "write_png", disk_full)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "AWA1", "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "ZSL-U" in captured.out and "GZSL-H" in captured.out and "wrote" not in captured.out
    err = captured.err.strip().splitlines()
    assert err == [f"cnzsl: error: could not write loss.png in {out} (No space left on device); nothing was "
                   "written there; the results printed above are this run's results"]
    assert not out.exists()
