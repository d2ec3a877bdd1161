"""The sampling helpers of `bench/mutation_scores.py` (mutation testing, outside the suite)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("mutmut", reason="bench/mutation_scores.py reads mutmut's status table; pip install mutmut")
_spec = importlib.util.spec_from_file_location(
    "mutation_scores", Path(__file__).resolve().parents[1] / "bench" / "mutation_scores.py")
mutation_scores = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mutation_scores", mutation_scores)
_spec.loader.exec_module(mutation_scores)


def test_score_stderr_by_hand() -> None:
    """p = 0.8 from 10 of 100: sqrt(0.8 * 0.2 / 10 * 90 / 99) = 0.120605; all checked: 0."""
    assert mutation_scores.score_stderr(8, 10, 100) == pytest.approx(math.sqrt(0.016 * 90 / 99), rel=1e-12)
    assert mutation_scores.score_stderr(8, 10, 10) == 0.0
    with pytest.raises(ValueError, match="need 0 <= detected <= checked <= total"):
        mutation_scores.score_stderr(11, 10, 100)


def test_sample_names_is_a_seeded_subset_without_repeats(tmp_path: Path) -> None:
    names = [f"pkg.mod.x_f__mutmut_{i}" for i in range(1, 51)]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py.meta").write_text(json.dumps({"exit_code_by_key": {n: None for n in names}}))
    a = mutation_scores.sample_names(tmp_path, "pkg.mod", 20, seed=1)
    assert len(set(a)) == 20 and set(a) <= set(names)
    assert a == mutation_scores.sample_names(tmp_path, "pkg.mod", 20, seed=1)
    assert a != mutation_scores.sample_names(tmp_path, "pkg.mod", 20, seed=2)
    assert sorted(mutation_scores.sample_names(tmp_path, "pkg.mod", 99)) == sorted(names)
    with pytest.raises(ValueError, match="no mutants of 'pkg.other'"):
        mutation_scores.sample_names(tmp_path, "pkg.other", 3)
