"""docs/science.md: every "docs/science.md section N" the repository cites exists, and no file
still cites the notes file the team was given, which a user of the repository does not have.

The scanner reads every .py and .md file of the repository (hidden folders, caches, run
outputs and this file, whose examples cite missing sections on purpose, excluded), finds each citation ``docs/science.md section N`` (also ``sections N and
M``, ``sections N-M``, wrapped over lines) and each figure label ``PAPER = "§N ..."``, and
asserts that N is a numbered heading of docs/science.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIENCE = ROOT / "docs" / "science.md"
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
OLD_NOTES = "PAPER" + ".md"  # the notes file's name, in two pieces so that this file never contains it

_NUMBER = r"\d+(?:\.\d+)?"
# "docs/science.md section 4.3", "docs/science.md sections 2.2 and 2.3", "... sections 5.2-5.3"
CITATION = re.compile(rf"docs/science\.md,?\s+sections?\s+({_NUMBER}(?:\s*(?:,|and|-|–)\s*{_NUMBER})*)")
# any other way of pointing into the file by number ("science.md §4", "science.md, sec. 4"):
# refused, so that no citation escapes the check above
LOOSE_CITATION = re.compile(r"science\.md\W{0,3}(?:§|sec\.?|sections?)\s*\d")
# headings "## 4. Forward-pass ..." and "### 4.3 V3: ..."
HEADING = re.compile(rf"^(#{{2,3}})\s+({_NUMBER})\.?\s", re.MULTILINE)
# figure modules: PAPER = "§5.2 Hessian spectrum", "§5.2-5.3 smoothness", "Appendix (V1, §4.1)"
FIGURE_LABEL = re.compile(r'^PAPER\s*=\s*"([^"]*)"', re.MULTILINE)

_SKIPPED_FOLDERS = {"__pycache__", "runs", "build", "dist", "mutants"}


def _text_files(suffixes: tuple[str, ...]) -> dict[str, str]:
    """Relative path -> text of every file under ROOT with one of ``suffixes``, hidden folders
    (``.git``, ``bench/.mutation``, ...), caches, run outputs and this file excluded."""
    files = {}
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in _SKIPPED_FOLDERS
                               and not d.endswith(".egg-info"))
        for name in names:
            if name.endswith(suffixes):
                path = Path(folder, name)
                relative = path.relative_to(ROOT).as_posix()
                if relative != THIS_FILE:
                    files[relative] = path.read_text(encoding="utf-8")
    return files


def section_numbers(science: str) -> set[str]:
    """The numbers of the headings of docs/science.md: "4" for ``## 4. ...``, "4.3" for ``### 4.3 ...``."""
    return {number for _, number in HEADING.findall(science)}


def cited_sections(text: str) -> list[str]:
    """Every section number ``text`` cites as docs/science.md section N (ranges by their ends)."""
    return [n for match in CITATION.finditer(text) for n in re.findall(_NUMBER, match.group(1))]


def loose_citations(text: str) -> list[str]:
    """Pointers into science.md by number that are not in the canonical form ``docs/science.md section N``."""
    canonical = {m.start() + len("docs/") for m in CITATION.finditer(text)}
    return [m.group(0) for m in LOOSE_CITATION.finditer(text) if m.start() not in canonical]


def missing_citations(files: dict[str, str], science: str) -> list[tuple[str, str]]:
    """(path, N) for every citation of a section N that docs/science.md does not have."""
    sections = section_numbers(science)
    return [(path, n) for path, text in sorted(files.items()) for n in cited_sections(text) if n not in sections]


@pytest.fixture(scope="module")
def science() -> str:
    assert SCIENCE.is_file(), f"{SCIENCE} is missing: the code cites it"
    return SCIENCE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return _text_files((".py", ".md"))


def test_science_md_has_numbered_sections_listed_at_the_top(science):
    headings = HEADING.findall(science)
    numbers = [n for _, n in headings]
    assert len(numbers) == len(set(numbers)), f"a section number is used twice: {numbers}"
    for level, number in headings:  # "## N." for sections, "### N.M" for subsections
        assert level == ("###" if "." in number else "##"), f"heading {number} at level {level}"
        assert number.split(".")[0] in numbers, f"subsection {number} has no section"
    tops = [n for n in numbers if "." not in n]
    assert tops == [str(i) for i in range(1, len(tops) + 1)], f"sections are not numbered 1..N in order: {tops}"
    # the list at the top names every section and subsection, and nothing else
    contents = science[:science.index("\n## ")]
    listed = re.findall(r"^\d+\. \[", contents, re.MULTILINE)
    listed = [n.split(".")[0] for n in listed] + re.findall(rf"^\s+- ({_NUMBER}) ", contents, re.MULTILINE)
    assert sorted(listed) == sorted(numbers)


def test_science_md_covers_the_topics_the_code_relies_on(science):
    for term in ("Eq. (9)", "Eq. (10)", "V1", "V2", "V3", "V4", "V5", "Hutchinson", "Lanczos",
                 "filter", "mSA", "mUA", "mH", "mAUC", "mJA", "forgetting", "att_splits.mat",
                 "res101.mat", "trainval_loc", "ICLR 2021", "44.7 / 41.6 / 43.1", "20-30 seconds"):
        assert term in science, term


def test_every_citation_points_to_an_existing_section(science, sources):
    cited = [(path, n) for path, text in sources.items() for n in cited_sections(text)]
    # the scanner must see the citations (44 modules cite the file): an empty scan is a bug
    assert len({path for path, _ in cited}) >= 40, sorted({path for path, _ in cited})
    assert missing_citations(sources, science) == []


def test_citations_use_the_one_form_the_check_reads(sources):
    loose = {path: found for path, text in sources.items() if (found := loose_citations(text))}
    assert loose == {}


def test_figure_labels_point_to_existing_sections(science):
    sections = section_numbers(science)
    labels = {path: FIGURE_LABEL.findall(text) for path, text in _text_files((".py",)).items()
              if path.startswith("figures/")}
    cited = [(path, n) for path, found in labels.items() for label in found
             for ref in re.findall(rf"§({_NUMBER}(?:-{_NUMBER})?)", label) for n in re.findall(_NUMBER, ref)]
    assert cited, "no figure label cites a section"
    assert [(path, n) for path, n in cited if n not in sections] == []


@pytest.mark.parametrize("text, missing", [
    ("see docs/science.md section 42", ["42"]),
    ("see docs/science.md\n    section 4.9 and docs/science.md section 4.1", ["4.9"]),
    ("docs/science.md sections 2.2 and 2.7", ["2.7"]),
    ("docs/science.md sections 5.2-5.9", ["5.9"]),
    ("docs/science.md section 4.1", []),
])
def test_the_check_catches_a_citation_of_a_missing_section(text, missing):
    science = "## 2. Model\n### 2.2 NS\n## 4. Claims\n### 4.1 V1\n## 5. Surface\n### 5.2 Probes\n"
    assert missing_citations({"x.py": text}, science) == [("x.py", n) for n in missing]


@pytest.mark.parametrize("text, loose", [
    ("docs/science.md §4", ["science.md §4"]),
    ("(science.md, section 4)", ["science.md, section 4"]),
    ("docs/science.md section 4", []),
    ("[`docs/science.md`](docs/science.md)", []),
])
def test_the_check_refuses_other_forms_of_citation(text, loose):
    assert loose_citations(text) == loose


@pytest.mark.parametrize("folder", ["analysis", "variance", "landscape", "figures", "bench", "examples", "tests",
                                    "docs"])
def test_no_file_cites_the_private_notes(folder):
    files = {path: text for path, text in _text_files((".py", ".md", ".sh", ".toml", ".txt")).items()
             if path.startswith(f"{folder}/")}
    assert files, f"nothing scanned under {folder}/"
    assert [path for path, text in files.items() if OLD_NOTES in text] == []


def test_readme_and_pyproject_do_not_cite_the_private_notes():
    for name in ("README.md", "pyproject.toml"):
        assert OLD_NOTES not in (ROOT / name).read_text(encoding="utf-8"), name
