"""Atomic output files and the run environment written beside every result.

Every file the toolkit writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the destination folder, are flushed to disk, then renamed over the
destination with :func:`os.replace` (atomic on POSIX and Windows).  A crash midway
leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_write", "check_output_folder", "environment_info", "refuse_to_overwrite", "to_jsonable",
           "write_json", "write_png"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that replaces it.

    Args:
        path: destination; its parent folder is created if missing.
        write: callback receiving a binary file object.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_folder(out: str | os.PathLike) -> Path:
    """``out`` as a Path, refused before any work when it cannot be a folder.

    Raises:
        ValueError: ``out`` is empty (``Path("")`` would silently mean the current folder), an
            existing file, or lies inside one (``FILE/sub``).
    """
    if isinstance(out, str) and out.strip() == "":
        raise ValueError("--out is empty; pass a folder for the results (it is created if missing)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder; pass a folder (it is created if missing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {str(out)!r} lies inside the file {str(parent)!r}; pass a folder")
            break
    return out


def refuse_to_overwrite(folder: str | os.PathLike, names: Iterable[str], overwrite: bool = False) -> None:
    """Stop before any work if ``folder`` already holds one of ``names`` (unless ``overwrite``).

    Raises:
        FileExistsError: naming the files found and the two ways out.
    """
    folder = Path(folder)
    existing = [name for name in names if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{folder} already holds {', '.join(existing)}; choose another --out folder or pass "
            f"--overwrite to replace them"
        )


def write_png(path: str | os.PathLike, fig: Any, dpi: int = 120) -> Path:
    """Atomically write the matplotlib figure ``fig`` as a PNG, then close it (when pyplot
    manages it; a plain ``matplotlib.figure.Figure`` needs no closing)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot = sys.modules.get("matplotlib.pyplot")  # never imported here: no backend is chosen
    if pyplot is not None:
        pyplot.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, tensors, numpy values, paths and tuples to plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 0) == 0:  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    return value


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` (after :func:`to_jsonable`) as indented UTF-8 JSON."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, platform and device: what a reader needs to reproduce a result."""
    import numpy
    import scipy

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "git_commit": _git_commit(),
    }
    if device is not None:
        device = torch.device(device)
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
    return info
