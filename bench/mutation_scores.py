"""Mutation score per module from a mutmut run (bench/mutation.sh).

    python bench/mutation_scores.py [MUTANTS_DIR] [--survivors]
    python bench/mutation_scores.py [MUTANTS_DIR] --sample MODULE N [--seed S]

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

``--sample MODULE N`` prints the names of ``N`` of ``MODULE``'s mutants drawn uniformly
without replacement (seeded), for modules whose covering tests are too slow to run every
mutant (``analysis.czsl.protocol``: each mutant trains small models for about 30 s):

    mutmut run $(python bench/mutation_scores.py mutants --sample analysis.czsl.protocol 40)

A module checked only on such a sample gets its score with a standard error, the binomial
one with the finite-population correction, ``sqrt(p (1 - p) / n (N - n) / (N - 1))`` for
``n`` of ``N`` mutants checked (when all ``n`` were detected, the rule of three instead: the
share of survivors is below ``3/n`` at 95 %).  It is an estimate of the whole module's score only when the
checked mutants are a uniform sample: a run cut short checks them in file order.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import random
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


def score_stderr(detected: int, checked: int, total: int) -> float:
    """Standard error of ``detected / checked`` as an estimate of the score of all ``total``
    mutants, for a uniform sample without replacement (0 when every mutant was checked)."""
    if not 0 < checked <= total or not 0 <= detected <= checked:
        raise ValueError(f"need 0 <= detected <= checked <= total and checked > 0, got {detected}, {checked}, {total}")
    if checked == total:
        return 0.0
    p = detected / checked
    return math.sqrt(p * (1 - p) / checked * (total - checked) / (total - 1))


def sample_names(mutants: Path, module: str, n: int, seed: int = 0) -> list[str]:
    """``n`` names of ``module``'s mutants (all when it has fewer), uniform without replacement."""
    meta = mutants.joinpath(*module.split(".")).with_suffix(".py.meta")
    if not meta.is_file():
        raise ValueError(f"no mutants of {module!r} in {mutants} (no {meta}); generate them with a mutmut run first")
    names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    return sorted(random.Random(seed).sample(names, min(n, len(names))))


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
    parser.add_argument("--sample", nargs=2, metavar=("MODULE", "N"), help="print N random mutant names of MODULE")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    args = parser.parse_args()
    if not args.mutants.is_dir():
        print(f"mutation_scores: no folder {args.mutants}; run bench/mutation.sh first", file=sys.stderr)
        return 2
    if args.sample:
        module, n = args.sample
        if not n.isdigit() or int(n) < 1:
            parser.error(f"--sample N must be a positive integer, got {n!r}")
        try:
            print("\n".join(sample_names(args.mutants, module, int(n), args.seed)))
        except ValueError as e:
            print(f"mutation_scores: {e}", file=sys.stderr)
            return 2
        return 0
    table = scores(args.mutants)
    print(f"{'module':<40}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'unchecked':>10}  score")
    total: Counter = Counter()
    for module, c in table.items():
        total += c
        checked = c["killed"] + c["timeout"] + c["survived"]
        detected = c["killed"] + c["timeout"]
        score = f"{detected / checked:.3f}" if checked else "-"
        if checked and c["not checked"] and detected == checked:  # the binomial stderr is 0 here
            score += f" (if a uniform sample: survivors below 3/{checked} = {3 / checked:.3f} at 95 %)"
        elif checked and c["not checked"]:
            score += f" +- {score_stderr(detected, checked, sum(c.values())):.3f} (if a uniform sample)"
        print(f"{module:<40}{sum(c.values()):>8}{c['killed']:>8}{c['timeout']:>8}{c['survived']:>9}"
              f"{c['not checked']:>10}  {score}")
    checked = total["killed"] + total["timeout"] + total["survived"]
    if checked:
        print(f"{'all':<40}{sum(total.values()):>8}{total['killed']:>8}{total['timeout']:>8}{total['survived']:>9}"
              f"{total['not checked']:>10}  {(total['killed'] + total['timeout']) / checked:.3f}")
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
