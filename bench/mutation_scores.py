"""Mutation score per module from a mutmut run (bench/mutation.sh).

    python bench/mutation_scores.py [MUTANTS_DIR] [--survivors]

Reads mutmut's per-file result records (``MUTANTS_DIR/**/*.py.meta``, JSON with the exit
code of every mutant's test run) and prints, per module, the mutants killed (a test failed),
timed out (the mutant made the tests hang: counted as detected, as mutmut does), survived
(every test passed) and not yet checked, and the score

    score = (killed + timeout) / (killed + timeout + survived).

``--survivors`` also lists the surviving mutants, each with its changed line and a
category read off the change:

- ``device/dtype``: a ``device=`` or ``dtype=`` argument dropped or set to None.  On the CPU
  these are the defaults (CPU, and float64 wherever the toolkit asks for it explicitly the
  tensors already are), so only the CUDA tests can tell them apart;
- ``message``: only the text of an error message changed (tests match on key phrases);
- ``numerical``: everything else, to be killed by a test or argued equivalent.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import sys
from collections import Counter
from pathlib import Path

# mutmut's own mapping from a test run's exit code to a status (mutmut/stats.py)
from mutmut.stats import status_by_exit_code


def scores(mutants: Path) -> dict[str, Counter]:
    by_module: dict[str, Counter] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = ".".join(meta.relative_to(mutants).with_suffix("").with_suffix("").parts)
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        by_module[module] = Counter(status_by_exit_code[code] for code in codes.values())
    return by_module


def _function_sources(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    text = path.read_text()
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name:
            out[node.name] = ast.get_source_segment(text, node) or ""
    return out


def _category(before: list[str], after: list[str]) -> str:
    changed = " ".join(before + after)
    if re.search(r"\b(device|dtype)\b", changed) and (
            any("None" in a for a in after) or sum(len(a) for a in after) < sum(len(b) for b in before)):
        return "device/dtype"
    strings = [re.sub(r"(\"[^\"]*\"|'[^']*')", "S", line) for line in before + after]
    if len(before) == len(after) and strings[: len(before)] == strings[len(before):]:
        return "message"
    return "numerical"


def survivors(mutants: Path):
    """(name, category, changed line) of every surviving mutant."""
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        alive = [name for name, code in codes.items() if status_by_exit_code[code] == "survived"]
        if not alive:
            continue
        sources = _function_sources(meta.with_suffix(""))
        for name in alive:
            func = name.rsplit(".", 1)[-1]
            orig = sources.get(func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
            mutant = sources.get(func, "")
            a = [line.split("(", 1)[-1] if i == 0 else line for i, line in enumerate(orig.splitlines())]
            b = [line.split("(", 1)[-1] if i == 0 else line for i, line in enumerate(mutant.splitlines())]
            diff = [d for d in difflib.ndiff(a, b) if d[:2] in ("- ", "+ ")]
            before = [d[2:].strip() for d in diff if d.startswith("- ")]
            after = [d[2:].strip() for d in diff if d.startswith("+ ")]
            yield name, _category(before, after), " / ".join(after)[:140]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mutants", nargs="?", default="mutants", type=Path, help="mutmut's mutants/ folder")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    args = parser.parse_args()
    if not args.mutants.is_dir():
        print(f"mutation_scores: no folder {args.mutants}; run bench/mutation.sh first", file=sys.stderr)
        return 2
    table = scores(args.mutants)
    print(f"{'module':<40}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'unchecked':>10}{'score':>8}")
    total: Counter = Counter()
    for module, c in table.items():
        total += c
        checked = c["killed"] + c["timeout"] + c["survived"]
        score = f"{(c['killed'] + c['timeout']) / checked:.3f}" if checked else "-"
        print(f"{module:<40}{sum(c.values()):>8}{c['killed']:>8}{c['timeout']:>8}{c['survived']:>9}"
              f"{c['not checked']:>10}{score:>8}")
    checked = total["killed"] + total["timeout"] + total["survived"]
    if checked:
        print(f"{'all':<40}{sum(total.values()):>8}{total['killed']:>8}{total['timeout']:>8}{total['survived']:>9}"
              f"{total['not checked']:>10}{(total['killed'] + total['timeout']) / checked:>8.3f}")
    if args.survivors:
        rows = list(survivors(args.mutants))
        by = Counter((re.split(r"\.x(?:_|\u01c1)", name)[0], category) for name, category, _ in rows)
        print("\nsurvivors by module and category:")
        for (module, category), count in sorted(by.items()):
            print(f"  {module:<38}{category:<14}{count:>5}")
        print()
        for name, category, change in rows:
            print(f"{category:<13} {name}: {change}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
