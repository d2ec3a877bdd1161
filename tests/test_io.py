"""analysis.io: atomic writes, JSON conversion, environment description."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.io import atomic_write, environment_info, to_jsonable, write_json
from tests.conftest import REPO


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# -- atomic_write ----------------------------------------------------------------------------
def test_atomic_write_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write(path, lambda f: f.write(b"hello")) == path
    assert path.read_bytes() == b"hello"
    assert files_under(tmp_path) == ["a", "a/b", "a/b/out.bin"]


def test_atomic_write_accepts_str_path(tmp_path):
    result = atomic_write(str(tmp_path / "x.txt"), lambda f: f.write(b"1"))
    assert isinstance(result, Path) and result.read_bytes() == b"1"


def test_atomic_write_overwrites(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda f: f.write(b"old"))
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert files_under(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_keeps_previous_content(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"previous")

    def fail(f):
        f.write(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, fail)
    assert path.read_bytes() == b"previous"
    assert files_under(tmp_path) == ["out.bin"]


def test_failed_first_write_leaves_nothing(tmp_path):
    def fail(f):
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        atomic_write(tmp_path / "new.bin", fail)
    assert files_under(tmp_path) == []


class _FullDisk:
    """``analysis.io.os`` with ``fdopen`` opening ``/dev/full``: the kernel's real ENOSPC on the
    first flush, as on a full disk (only ``analysis.io`` sees it)."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdopen(fd, mode="r"):
        os.close(fd)
        return open("/dev/full", mode)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a real ENOSPC")
@pytest.mark.parametrize("write", [
    lambda f: f.write(b"x" * 10),
    lambda f: torch.save({"w": torch.zeros(100_000)}, f),  # torch adds a RuntimeError to the chain
], ids=["bytes", "torch.save"])
def test_a_full_disk_names_the_destination_without_a_chain(tmp_path, monkeypatch, write):
    """A bare write() fails with ENOSPC and no file name; the error names the destination."""
    import analysis.io

    monkeypatch.setattr(analysis.io, "os", _FullDisk())
    path = tmp_path / "model.pt"
    with pytest.raises(OSError) as info:
        atomic_write(path, write)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert files_under(tmp_path) == []


def test_a_read_only_folder_names_the_destination(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".x.json.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match="Read-only file system") as info:
        write_json(tmp_path / "x.json", {"a": 1})
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "x.json")


# -- to_jsonable / write_json ---------------------------------------------------------------------
@dataclass(frozen=True)
class Inner:
    weights: torch.Tensor
    where: Path


@dataclass
class Outer:
    name: str
    dims: tuple[int, ...]
    inner: Inner
    score: np.float32


def test_write_json_round_trip(tmp_path):
    obj = {
        "config": Outer("run", (6, 6), Inner(torch.tensor([[1.0, 2.5], [3.0, -4.0]]), Path("/data/x.mat")),
                        np.float32(0.5)),
        "scalar_tensor": torch.tensor(3),
        "pair": (1, "two", (3.0,)),
        "path": Path("results") / "run1",
        "np": {"i": np.int64(7), "f": np.float64(0.25), "b": np.bool_(True)},
        "array": np.arange(3),
        "single": np.array([9]),
        1: None,
    }
    path = write_json(tmp_path / "sub" / "out.json", obj)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    doc = json.loads(text)
    assert [doc.pop(k) for k in ("schema_version", "complete")] == [1, True] and doc.pop("created")
    assert doc == {
        "config": {"name": "run", "dims": [6, 6],
                   "inner": {"weights": [[1.0, 2.5], [3.0, -4.0]], "where": "/data/x.mat"},
                   "score": 0.5},
        "scalar_tensor": 3,
        "pair": [1, "two", [3.0]],
        "path": os.path.abspath(Path("results") / "run1"),  # recorded paths are absolute
        "np": {"i": 7, "f": 0.25, "b": True},
        "array": [0, 1, 2],
        "single": [9],
        "1": None,
    }
    assert files_under(tmp_path) == ["sub", "sub/out.json"]


def test_to_jsonable_numpy_scalars_become_python():
    for value, kind in ((np.float32(1.5), float), (np.int32(-2), int), (np.bool_(False), bool)):
        converted = to_jsonable(value)
        assert type(converted) is kind and converted == value.item()


def test_to_jsonable_dataclass_class_is_left_alone():
    assert to_jsonable(Inner) is Inner


def test_write_json_keeps_nan(tmp_path):
    path = write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert math.isnan(json.loads(path.read_text())["x"])


# -- environment_info ----------------------------------------------------------------------------
def test_environment_info_cpu():
    info = environment_info("cpu")
    assert {"python", "torch", "numpy", "scipy", "device"} <= info.keys()
    assert info["device"] == "cpu"
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    json.dumps(info)


def test_environment_info_without_device():
    assert "device" not in environment_info()


def test_atomic_write_gives_the_usual_file_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_drawing_never_switches_the_process_wide_matplotlib_backend(tmp_path):
    """Importing figures.style and drawing the train, czsl, landscape and slice figures used
    to call matplotlib.use('Agg'); a user's backend (here 'svg') must survive all of it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("svg")
        import torch
        import figures.style as style
        from analysis.experiment import _loss_figure
        from analysis.training import History
        from analysis.io import write_png
        from landscape.slices import Slice1D, Slice2D, plot_slice_1d, plot_slice_2d
        fig, axes = style.new_figure(1, 2)
        style.save_figure(fig, {str(tmp_path)!r}, "styled", formats=("png",))
        write_png({str(tmp_path / "loss.png")!r}, _loss_figure([History(loss=[1.0, 0.5])], [1], "t"))
        grid = torch.linspace(-1, 1, 3, dtype=torch.float64)
        plot_slice_1d(Slice1D(grid, grid.square() + 1))
        plot_slice_2d(Slice2D(grid, grid, grid[:, None].square() + grid[None, :].square() + 1))
        print(matplotlib.get_backend())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "svg", out.stderr
    assert (tmp_path / "styled.png").read_bytes()[:4] == b"\x89PNG"
