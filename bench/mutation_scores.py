"""Mutation score per module from a mutmut run (bench/mutation.sh).

    python bench/mutation_scores.py [MUTANTS_DIR] [--survivors]

Reads mutmut's per-file result records (``MUTANTS_DIR/**/*.py.meta``, JSON with the exit
code of every mutant's test run) and prints, per module, the mutants killed (a test failed),
timed out (the mutant made the tests hang: counted as detected, as mutmut does), survived
(every test passed) and not yet checked, and the score

    score = (killed + timeout) / (killed + timeout + survived).

``--survivors`` also lists the surviving mutants' names (``mutmut show NAME`` prints each
one's diff).
"""

from __future__ import annotations

import argparse
import json
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
        for meta in sorted(args.mutants.rglob("*.py.meta")):
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
                if status_by_exit_code[code] == "survived":
                    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
