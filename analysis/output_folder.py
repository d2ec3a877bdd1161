"""A run's output folder: locked while the run works, its files published together at the end.

Every command that writes results follows one protocol, so a folder is either complete or
untouched, whatever stops the run (an error, Ctrl-C, SIGTERM, a full disk):

1. **Lock.** ``OUT/.cnzsl.lock`` is locked exclusively (``fcntl.flock``) for the whole run:
   a second run into the same folder stops at once with a message naming the first, instead
   of silently replacing its results.  The lock dies with the process (no stale locks); the
   file is removed at the end of the run.
2. **Refuse** before any work when ``OUT`` already holds one of the run's file names,
   unless ``overwrite`` (:func:`analysis.io.refuse_to_overwrite`).
3. **Stage.** The run writes every file into a hidden staging folder inside ``OUT``
   (``OUT/.cnzsl-staging-XXXX``, same file system, so publishing is renames only).
4. **Publish** on success: the names are checked again, then every staged file is moved
   into ``OUT`` with :func:`os.replace`, the completion marker (for example
   ``results.json``) last, with SIGINT and SIGTERM held back while the moves run.  With
   ``overwrite`` the old marker is removed first, so an interrupted publish can never leave
   new files beside an old marker.  A folder holds its marker only when its run finished.
5. **Discard** on any exception: the staging folder is removed; ``OUT`` is as it was.
   Staging folders left by a killed process (SIGKILL, power loss) are removed by the next
   run that takes the lock.

Example::

    with OutputFolder(out, ("config.json", "results.json"), overwrite=False) as folder:
        results = train(...)                              # the lock is held, nothing written yet
        write_json(folder.stage("config.json"), config)
        write_json(folder.stage("results.json"), results)  # the marker: the last name
    # here OUT holds both files, or (after an exception) neither
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from analysis.io import check_output_folder, refuse_to_overwrite

try:  # POSIX; elsewhere runs are not locked against each other (stated in the README)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "STAGING_PREFIX", "FolderLock", "OutputFolder", "OutputFolderBusy"]

LOCK_NAME = ".cnzsl.lock"
STAGING_PREFIX = ".cnzsl-staging-"


class OutputFolderBusy(FileExistsError):
    """Another process holds the lock of the output folder."""


class FolderLock:
    """Step 1 of the protocol alone: an exclusive lock on ``out`` (created if missing) for a
    ``with`` block.  ``cnzsl figures`` takes only this: its figures are published one by one
    (each file atomically) and its caches are meant to survive an interrupted run.

    A folder the lock created is removed again when the block ends in an exception and left
    it empty: a run that fails writes nothing, not even its folder.

    Raises (on entering):
        OutputFolderBusy: another process holds the lock.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> FolderLock:
        self._created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            return self
        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputFolderBusy(
                f"{self.out} is in use by another cnzsl run ({holder}); wait for it to finish or choose "
                f"another --out folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        failed_in_new_folder = exc_type is not None and self._created
        if self._fd is not None:  # leave no lock file behind; removed while still held
            (self.out / LOCK_NAME).unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        if failed_in_new_folder:
            try:
                self.out.rmdir()  # only if empty
            except OSError:
                pass


class OutputFolder:
    """The protocol of the module docstring, as a context manager.

    Args:
        out: the output folder (created if missing; refused if it is a file or lies in one).
        names: every file name the run may publish; the marker must be among them.
        marker: the file whose presence says the run finished (default: the last of ``names``).
        overwrite: replace files of an earlier run instead of refusing.

    Raises (on entering):
        ValueError: ``out`` is empty, a file, or inside a file; ``marker`` not in ``names``.
        OutputFolderBusy: another run holds the folder's lock.
        FileExistsError: ``out`` holds one of ``names`` and ``overwrite`` is False.
    """

    def __init__(self, out: str | os.PathLike, names: Iterable[str], *, marker: str | None = None,
                 overwrite: bool = False) -> None:
        self.out = check_output_folder(out)
        self.names = tuple(names)
        self.marker = self.names[-1] if marker is None else marker
        if self.marker not in self.names:
            raise ValueError(f"the completion marker {self.marker!r} is not one of the run's files {self.names}")
        self.overwrite = overwrite
        self.staging: Path | None = None
        self._lock = FolderLock(self.out)

    def __enter__(self) -> OutputFolder:
        self._lock.__enter__()
        try:
            refuse_to_overwrite(self.out, self.names, self.overwrite)
            for stale in self.out.glob(f"{STAGING_PREFIX}*"):  # left by a killed run: we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out))
        except BaseException as err:
            self._lock.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def stage(self, name: str) -> Path:
        """Where the run writes ``name`` (inside the staging folder).

        Raises:
            ValueError: ``name`` is not one of the run's declared files.
            RuntimeError: outside the ``with`` block.
        """
        if self.staging is None:
            raise RuntimeError("OutputFolder.stage() is only valid inside its `with` block")
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of the run's declared files {self.names}")
        return self.staging / name

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._publish()
        except BaseException as err:
            exc_type, exc, tb = type(err), err, err.__traceback__
            raise
        finally:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
                self.staging = None
            self._lock.__exit__(exc_type, exc, tb)

    def _publish(self) -> None:
        assert self.staging is not None
        staged = [name for name in self.names if (self.staging / name).exists()]
        if self.marker not in staged:
            raise RuntimeError(f"the run staged no {self.marker}, its completion marker: nothing was published")
        refuse_to_overwrite(self.out, self.names, self.overwrite)  # again: only our lock kept others out
        held = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)  # the moves run to the end
        try:
            (self.out / self.marker).unlink(missing_ok=True)
            for name in staged:
                if name != self.marker:
                    os.replace(self.staging / name, self.out / name)
            os.replace(self.staging / self.marker, self.out / self.marker)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
