"""Atomic output files, the frame of every JSON output, and the run environment written beside results.

Every file the toolkit writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the destination folder, are flushed to disk, then renamed over the
destination with :func:`os.replace` (atomic on POSIX and Windows).  A crash midway
leaves either the old file or the new one, never a torn one.

Every JSON file (``results.json``, ``config.json``, ``environment.json``, ``czsl.json``,
``landscape.json``, ``variance.json``, ``probe.json``, the figures' caches and
``figures.json``) is written by :func:`write_json`, which frames the payload (a JSON
object) with the same keys, in this order::

    schema_version  SCHEMA_VERSION, an integer: raised when a key is renamed or removed, or
                    its meaning or unit changes (new keys alone do not raise it)
    created         when the file was written: ISO 8601, UTC ("2025-01-31T12:00:00+00:00")
    units           where the payload holds percentages, fractions, seconds or losses:
                    {key path: unit} (:data:`UNITS`); a path joins keys with ".", "[]" stands
                    for every element of a list and "*" for every key of an object, e.g.
                    "rows[].per_seed[].evaluations[].seen_accuracy": "fraction"
    ...             the payload's own keys
    complete        true, the last key

``complete`` is written last, after the whole payload was converted and serialized, in
the same atomic write; a run's result file is moreover published last
(:mod:`analysis.output_folder`).  A reader that finds no ``complete: true`` holds a file
cut short by something else (a copy, a hand edit) or an older version's output.

The values are resolved: a path is absolute (:func:`to_jsonable`), and an option whose
default was applied holds that default, not ``null``.  ``null`` remains where nothing was
given and nothing was substituted (``data_root`` of a synthetic run) and where a value is
undefined (the standard deviation of a single seed).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["ENVELOPE_KEYS", "SCHEMA_VERSION", "UNITS", "atomic_write", "check_output_folder", "environment_info",
           "refuse_to_overwrite", "to_jsonable", "utc_timestamp", "write_json", "write_png"]

SCHEMA_VERSION = 1  # of every JSON output (module docstring); one number for the whole toolkit
ENVELOPE_KEYS = ("schema_version", "created", "units", "complete")  # written by write_json, refused in payloads
UNITS = {
    "percent": "percentage points in [0, 100] (per-class mean accuracies, AUSUC x 100)",
    "fraction": "a fraction in [0, 1]",
    "seconds": "wall-clock seconds",
    "nats": "cross-entropy in nats (mean over the samples)",
    "dimensionless": "a pure number (a factor or a ratio)",
}


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that replaces it.

    Args:
        path: destination; its parent folder is created if missing.
        write: callback receiving a binary file object.

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        OSError: the file system refused (disk full, read-only, permissions): the system's
            errno and reason with ``filename`` the destination ``path`` (not the temporary
            file, and also when the failing call was a bare ``write`` that names no file),
            raised without the chain of follow-up errors (a torn ``torch.save`` adds its
            own); nothing is left at ``path`` beyond what was there before.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        # ENOSPC from write() names no file, and torch.save wraps it in follow-up errors
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
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
    """Convert dataclasses, tensors, numpy values, paths (made absolute) and tuples to plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Path):  # absolute: a record read elsewhere must not depend on the cwd of the run
        return os.path.abspath(value)
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 0) == 0:  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    return value


def utc_timestamp() -> str:
    """Now, in UTC, as ISO 8601 to the second: ``"2025-01-31T12:00:00+00:00"``."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, obj: Any, *, units: Mapping[str, str] | None = None) -> Path:
    """Atomically write ``obj`` (after :func:`to_jsonable`) as indented UTF-8 JSON, framed by
    ``schema_version``, ``created``, ``units`` and ``complete`` (module docstring).

    Args:
        path: destination.
        obj: the payload: a dict or a dataclass (a JSON object once converted).
        units: ``{key path: unit}`` with units from :data:`UNITS`; omitted when empty.

    Raises:
        TypeError: ``obj`` does not convert to a JSON object.
        ValueError: the payload uses a key of :data:`ENVELOPE_KEYS`, or ``units`` names a
            unit outside :data:`UNITS`.

    Example::

        write_json(out / "results.json", {"zsl_unseen": 61.3}, units={"zsl_unseen": "percent"})
        # {"schema_version": 1, "created": "...", "units": {"zsl_unseen": "percent"},
        #  "zsl_unseen": 61.3, "complete": true}
    """
    payload = to_jsonable(obj)
    if not isinstance(payload, dict):
        raise TypeError(f"write_json writes a JSON object (a dict or a dataclass), got {type(obj).__name__}; "
                        f"wrap it, e.g. {{'values': ...}}")
    taken = [key for key in ENVELOPE_KEYS if key in payload]
    if taken:
        raise ValueError(f"the payload for {Path(path).name} uses the key(s) {taken} that write_json writes "
                         f"itself ({', '.join(ENVELOPE_KEYS)}); rename them (a document read back: drop them)")
    unknown = sorted({unit for unit in (units or {}).values()} - set(UNITS))
    if unknown:
        raise ValueError(f"unknown unit(s) {unknown} for {Path(path).name}; use one of {', '.join(UNITS)}")
    document: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "created": utc_timestamp()}
    if units:
        document["units"] = dict(units)
    document.update(payload)
    body = json.dumps(document, indent=2, sort_keys=False, allow_nan=True)
    # the completion flag goes in only now, after everything before it was serialized
    text = body[:-1].rstrip() + ',\n  "complete": true\n}\n'
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
