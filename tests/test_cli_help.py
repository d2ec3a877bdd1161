"""``cnzsl --help`` of every command: each default stated once, required options marked,
examples that parse, and ``cnzsl --version`` (analysis/help_format.py)."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from importlib.metadata import PackageNotFoundError

import pytest

import analysis.help_format as help_format
from analysis.cli import build_parser, main
from tests.conftest import REPO


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


COMMANDS = _commands()


def _option_blocks(text: str) -> dict[str, str]:
    """The option list of a --help text: first option string -> its whole entry (one line)."""
    blocks: dict[str, list[str]] = {}
    current = None
    section = False
    for line in text.splitlines():
        if line in ("options:", "optional arguments:"):
            section = True
            continue
        if section and line and not line.startswith(" "):  # the next section (the epilog)
            break
        if re.match(r"^  -", line):
            current = line.split()[0].rstrip(",")
            blocks[current] = [line]
        elif current is not None and line.startswith("   "):
            blocks[current].append(line)
    return {k: " ".join(" ".join(v).split()) for k, v in blocks.items()}


def test_every_command_is_checked():
    assert set(COMMANDS) == {"train", "czsl", "variance", "attributes", "landscape", "spectrum", "figures", "probe"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_default_is_stated_at_most_once(name):
    blocks = _option_blocks(COMMANDS[name].format_help())
    assert "-h" in blocks and len(blocks) > 3
    for option, entry in blocks.items():
        assert entry.count("(default") <= 1, f"cnzsl {name} {option}: {entry}"
        # nothing to show: flags and options whose absence the help explains
        assert "(default: None)" not in entry and "(default: False)" not in entry, f"cnzsl {name} {option}: {entry}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_required_options_say_so(name):
    parser = COMMANDS[name]
    blocks = _option_blocks(parser.format_help())
    required = [a.option_strings[0] for a in parser._actions if a.required]
    for option in required:
        assert "(required)" in blocks[option], blocks[option]
    if name not in ("attributes", "figures"):
        assert "--out" in required and blocks["--out"].startswith("--out DIR ")
    if name == "figures":  # --out is needed for everything but --list
        assert "(required unless --list)" in blocks["--out"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_examples_that_parse(name):
    text = COMMANDS[name].format_help()
    assert "\nexamples:\n" in text
    lines = [line.strip() for line in text.split("\nexamples:\n", 1)[1].splitlines() if line.startswith("  cnzsl ")]
    assert 1 <= len(lines) <= 3
    for line in lines:
        argv = shlex.split(line)[1:]
        assert argv[0] == name
        args = build_parser().parse_args(argv)  # a bad example exits with status 2 here
        assert args.handler is not None


def test_the_top_level_help_points_at_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:\n  cnzsl train --dataset AWA1 --out runs/awa1-cn\n" in out and "cnzsl COMMAND --help" in out


def _pyproject_version() -> str:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+; the fallback is checked there")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"cnzsl {help_format.package_version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", help_format.package_version())


def test_version_falls_back_to_pyproject_when_not_installed(monkeypatch, capsys):
    def not_installed(name):
        raise PackageNotFoundError(name)

    expected = _pyproject_version()
    monkeypatch.setattr(help_format, "version", not_installed)
    assert help_format.package_version() == expected
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"cnzsl {expected}\n"
    # Python 3.10 has no tomllib: the [project] table's version line is read instead
    monkeypatch.setitem(sys.modules, "tomllib", None)
    assert help_format.package_version() == expected


def test_version_of_a_foreign_or_missing_pyproject(monkeypatch, tmp_path):
    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(help_format, "version", not_installed)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "9.9"\n')
    monkeypatch.setattr(help_format, "_PYPROJECT", tmp_path / "pyproject.toml")
    assert help_format.package_version().startswith("unknown (not installed")
    monkeypatch.setattr(help_format, "_PYPROJECT", tmp_path / "missing.toml")
    assert help_format.package_version().startswith("unknown (not installed")
