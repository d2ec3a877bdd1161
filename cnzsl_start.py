"""The ``cnzsl`` console script: it answers Ctrl-C and SIGTERM from its first instant.

Importing the toolkit (torch, scipy, matplotlib) takes seconds, longer on a loaded
machine, and :func:`analysis.cli.main` installs its signal handling only once that is
done.  A Ctrl-C in that window would end the process with a ``KeyboardInterrupt``
traceback through torch's import machinery, and a SIGTERM would kill it without a word.
This module imports nothing heavy: it catches both while the toolkit loads and ends the
process the way every command does, with one line and status 128 + the signal's number
(130 or 143); nothing was run, so nothing was written.  A signal the parent ignores (a
background job of a script ignores SIGINT) stays ignored.

It lives outside ``analysis/`` because importing any module of the package runs
``analysis/__init__.py``, which imports torch.  ``python -m analysis`` imports the package
first and has no such guard.
"""

from __future__ import annotations

import signal
import sys

STOPPING_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class _Stopped(BaseException):
    """A stopping signal arrived while the toolkit was loading (``args[0]``: its number)."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def main() -> int:
    """Load :mod:`analysis.cli` with SIGINT and SIGTERM answered, then run its ``main()``."""
    previous = {sig: signal.getsignal(sig) for sig in STOPPING_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _stop)
    try:
        from analysis.cli import main as run
    except _Stopped as stopped:
        signum = stopped.args[0]
        print(f"cnzsl: interrupted ({STOPPING_SIGNALS[signum]}) while starting; nothing was run or written",
              file=sys.stderr)
        return 128 + int(signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return run()
