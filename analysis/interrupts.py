"""SIGINT and SIGTERM held back while a cleanup runs, so that a second Ctrl-C cannot cut it short.

Ctrl-C (SIGINT) and SIGTERM stop a command by raising an exception in the main thread
(``KeyboardInterrupt``, :class:`analysis.cli.Terminated`); the ``with`` blocks on the way
out clean up (:mod:`analysis.output_folder` removes the staging folder and releases the
lock) and :func:`analysis.cli.main` prints one line.  A second signal used to raise in
turn wherever it landed: inside the cleanup it left the staging folder or the lock file
behind (and a folder the run had created), inside the last line's ``print`` it ended the
command with a traceback instead of the line.

:func:`signals_held` runs such a block with both signals recorded instead of acted on:

* with an exception in flight (``in_flight``: the first interrupt, or an error) the command
  is ending anyway, so what arrived is only noted on that exception, as
  ``err.held_signals`` (:data:`HELD_SIGNALS`, a list of signal numbers), for the last line
  to mention, and dropped;
* otherwise (a cleanup after a run that succeeded) the first signal that arrived is
  delivered when the block ends, to the handler that was there before, as if it had arrived
  just after the block.

Only the cleanups are held, not the whole unwinding after the first signal: a second Ctrl-C
while other code unwinds (a process group being torn down, say) still stops it, and the
cleanups further out still run to their end.

Example::

    try:
        work()
    except BaseException as err:
        with signals_held(err):        # a Ctrl-C in here is noted on err, the cleanup finishes
            shutil.rmtree(staging, ignore_errors=True)
        raise
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HELD_SIGNALS", "signals_held"]

HELD_SIGNALS = "held_signals"  # attribute of the exception in flight: the signals its cleanups held back
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held(in_flight: BaseException | None = None) -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM recorded, not acted on (module docstring).

    Args:
        in_flight: the exception the block cleans up after, if any; the signals that arrive
            are appended to its :data:`HELD_SIGNALS` list.  An exception raised by the block
            itself is treated the same way.  Without either, the first signal is delivered
            when the block ends.

    Outside the main thread (where Python runs no signal handler and cannot set one) the
    block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}  # None: set from C
    for sig in previous:
        signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    except BaseException as err:
        in_flight = err
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if in_flight is not None:
            if held:
                setattr(in_flight, HELD_SIGNALS, [*getattr(in_flight, HELD_SIGNALS, []), *held])
        elif held:
            signal.raise_signal(held[0])  # the restored handler answers it, here
