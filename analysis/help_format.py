"""How every ``cnzsl`` command explains itself: the help formatter, the examples epilog, the version.

Decisions (issue 18, "outputs that explain themselves"):

* **Defaults once.** :class:`HelpFormatter` appends ``(default: X)`` to an option's help
  only when the text does not already state its default (it contains ``(default`` or
  ``%(default)``), and never for a flag (default ``False``) or an option whose default is
  ``None`` (nothing to show: its help says what leaving it out means).
* **Required options** end with ``(required)`` in the option list (the usage line shows
  them without brackets already).
* **Examples.** Every command has an epilog built by :func:`examples`: real command lines,
  each of which parses (``tests/test_cli_help.py`` parses them).  Indented lines of a
  description or epilog are kept as written; other paragraphs are re-wrapped.
* **Version.** :func:`package_version` reads the installed distribution's metadata and,
  when the code runs from a source tree that was never installed, the ``version`` of the
  ``pyproject.toml`` beside the packages.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["DISTRIBUTION", "HelpFormatter", "examples", "package_version"]

DISTRIBUTION = "cnzsl-toolkit"  # [project] name in pyproject.toml
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class HelpFormatter(argparse.HelpFormatter):
    """The formatter of every ``cnzsl`` parser (module docstring for the rules)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return text if "required" in text else f"{text} (required)".lstrip()
        states_default = "(default" in text or "%(default)" in text
        nothing_to_show = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if states_default or nothing_to_show or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # paragraphs are re-wrapped; indented lines (example commands) are kept as written
        out: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                out.append(textwrap.fill(" ".join(paragraph), width, initial_indent=indent,
                                         subsequent_indent=indent))
                paragraph.clear()

        for line in text.splitlines():
            if not line.strip():
                flush()
                out.append("")
            elif line[0].isspace():
                flush()
                out.append(indent + line.rstrip())
            else:
                paragraph.append(" ".join(line.split()))
        flush()
        return "\n".join(out)


def examples(*lines: str) -> str:
    """An ``examples:`` epilog: one indented command line each (kept as written by
    :class:`HelpFormatter`)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _pyproject_version(path: Path) -> str | None:
    """``[project] version`` of ``path`` when it names :data:`DISTRIBUTION`; None otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the [project] table's first version line
        match = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.MULTILINE | re.DOTALL)
        return match.group(1) if match else None
    project = tomllib.loads(text).get("project", {})
    return project.get("version") if project.get("name") == DISTRIBUTION else None


def package_version() -> str:
    """The toolkit's version: the installed metadata, else the source tree's ``pyproject.toml``."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree that was never installed
        pass
    found = _pyproject_version(_PYPROJECT)
    return found if found is not None else "unknown (not installed, and no pyproject.toml beside the code)"
