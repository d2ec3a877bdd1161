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

Steps 4 and 5 end by removing the staging folder and the lock with SIGINT and SIGTERM held
back (:func:`analysis.interrupts.signals_held`): a second Ctrl-C cannot cut them short.

What the folder holds after an exception is written on the exception, as
``err.folder_state`` (:data:`FOLDER_STATE`), where it is not "as it was":

* ``"complete"``: SIGINT or SIGTERM arrived while the files were moved; the moves ran to
  the end, so the folder holds the whole run, marker included, and the signal is raised
  only then (the command says so instead of "nothing written").
* ``"incomplete"``: a move failed (disk full, read-only) after an ``overwrite`` publish had
  removed the old marker or replaced old files: no marker, some files of either run.
  Without ``overwrite`` the files already moved are taken back and the folder is as it was.

A folder that cannot be written (read-only file system, permissions, a full disk when the
lock or the staging folder is created) is refused on entering, before any work, with
:class:`OutputFolderUnwritable`.

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

from analysis.interrupts import signals_held
from analysis.io import check_output_folder, refuse_to_overwrite

try:  # POSIX; elsewhere runs are not locked against each other (stated in the README)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FOLDER_STATE", "LOCK_NAME", "STAGING_PREFIX", "FolderLock", "OutputFolder", "OutputFolderBusy",
           "OutputFolderUnwritable", "publish_files"]

LOCK_NAME = ".cnzsl.lock"
STAGING_PREFIX = ".cnzsl-staging-"
FOLDER_STATE = "folder_state"  # attribute of an exception out of a publish: "complete" or "incomplete"


class OutputFolderBusy(FileExistsError):
    """Another process holds the lock of the output folder."""


class OutputFolderUnwritable(ValueError):
    """The output folder cannot be created or written (found before any work)."""


def _unwritable(out: Path, err: OSError) -> OutputFolderUnwritable:
    return OutputFolderUnwritable(
        f"--out {str(out)!r} cannot be written ({err.strerror or err}); choose a folder you can write to")


def publish_files(staging: Path, out: Path, names: Iterable[str], *, marker: str | None = None,
                  overwrite: bool = False) -> None:
    """Move ``names`` from ``staging`` into ``out`` with :func:`os.replace`, ``marker`` last,
    SIGINT and SIGTERM held back until every move ran (step 4 of the module docstring).

    With ``overwrite`` an existing ``marker`` is removed first, so that new files never stand
    beside an old marker.  A failed move takes back the files this call added (names that
    were not in ``out`` before); what it cannot take back is marked on the error
    (``err.folder_state = "incomplete"``); a signal held back during the moves is raised
    after them with ``folder_state = "complete"``.

    Raises:
        OSError: a move failed (the file system refused).
    """
    names = list(names)
    order = [n for n in names if n != marker] + ([marker] if marker in names else [])
    existed = {name for name in names if os.path.lexists(out / name)}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    moved: list[str] = []
    removed_marker = False
    done = False
    try:
        try:
            if marker is not None and overwrite and marker in existed:
                (out / marker).unlink()
                removed_marker = True
            for name in order:
                os.replace(staging / name, out / name)
                moved.append(name)
            done = True
        except OSError as err:
            kept = []
            for name in moved:  # take back what was not there before; a replaced file cannot be
                if name in existed:
                    kept.append(name)
                    continue
                try:
                    (out / name).unlink()
                except OSError:
                    kept.append(name)
            if kept or removed_marker:
                setattr(err, FOLDER_STATE, "incomplete")
            raise
    finally:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # runs a signal's handler held back
        except BaseException as err:  # KeyboardInterrupt, or SIGTERM's exception
            if done:
                setattr(err, FOLDER_STATE, "complete")
            raise


class FolderLock:
    """Step 1 of the protocol alone: an exclusive lock on ``out`` (created if missing) for a
    ``with`` block.  ``cnzsl figures`` takes only this: its figures are published one by one
    (each file atomically) and its caches are meant to survive an interrupted run.

    A folder the lock created is removed again when the block ends in an exception and left
    it empty: a run that fails writes nothing, not even its folder.

    Raises (on entering):
        OutputFolderBusy: another process holds the lock.
        OutputFolderUnwritable: ``out`` or its lock file cannot be created (read-only file
            system, permissions, disk full).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> FolderLock:
        self._created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if fcntl is None:  # pragma: no cover - Windows
                return self
            fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:  # found now, before any work, not when the results are due
            self._remove_if_created()
            raise _unwritable(self.out, err) from None
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
        with signals_held(exc):  # a second Ctrl-C cannot leave the lock behind (analysis.interrupts)
            if self._fd is not None:
                (self.out / LOCK_NAME).unlink(missing_ok=True)  # leave no lock file; removed while still held
                os.close(self._fd)  # closing releases the flock
                self._fd = None
            if failed_in_new_folder:
                self._remove_if_created()

    def _remove_if_created(self) -> None:
        if self._created:
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
        OutputFolderUnwritable: ``out``, its lock or its staging folder cannot be created.
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
            try:
                self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out))
            except OSError as err:
                raise _unwritable(self.out, err) from None
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
            try:
                with signals_held(exc):  # a second Ctrl-C cannot leave the staging folder behind
                    if self.staging is not None:
                        shutil.rmtree(self.staging, ignore_errors=True)
                        self.staging = None
                    self._lock.__exit__(exc_type, exc, tb)
            except BaseException as err:  # after a publish: a signal held back during the cleanup
                if exc is None:
                    setattr(err, FOLDER_STATE, "complete")
                raise

    def _publish(self) -> None:
        assert self.staging is not None
        staged = [name for name in self.names if (self.staging / name).exists()]
        if self.marker not in staged:
            raise RuntimeError(f"the run staged no {self.marker}, its completion marker: nothing was published")
        refuse_to_overwrite(self.out, self.names, self.overwrite)  # again: only our lock kept others out
        publish_files(self.staging, self.out, staged, marker=self.marker, overwrite=self.overwrite)
