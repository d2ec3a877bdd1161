"""What every figure module receives: :class:`FigureContext` (output folder, budget, data, device).

A figure module ``figures/<name>.py`` defines

    NAME: str                                  # "variance_vs_depth", ... (= the module name)
    TITLE: str                                 # one line, used in the README and --list
    PAPER: str                                 # what it reproduces: "Figure 1", "§8.1 ..." (§N: docs/science.md)
    compute(ctx: FigureContext) -> Path        # writes ctx.cache_path(NAME, suffix) and returns it
    plot(ctx: FigureContext) -> list[Path]     # reads only that cache; writes NAME.png and NAME.pdf
    EXTRA_OUTPUTS: tuple[str, ...]             # optional: other files plot() writes (NAME.md, ...)

``compute`` stores, beside its numbers, ``ctx.provenance()`` (settings, the data each
panel used and whether it is real or synthetic, the environment); ``plot`` reads the cache
with :func:`read_cache`, which fails loudly when it is missing, so a figure can be redrawn
(``cnzsl figures --plot-only``) without recomputing it.

Data: :meth:`FigureContext.datasets` lists the data sets a figure should use: every GBU
data set that ``data_root`` holds (real attributes; real features where ``res101.mat`` is
there, synthetic features otherwise), or the five synthetic presets when there is no
``data_root``.  :meth:`FigureContext.load` turns one :class:`DataChoice` into a
:class:`~analysis.data.ZSLData`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from analysis.data import DataError, ZSLData
from analysis.datasets import DATASETS, canonical_dataset_name, load_dataset
from analysis.io import check_output_folder, environment_info, to_jsonable
from analysis.training import resolve_device

__all__ = ["DataChoice", "EpochsBudget", "FigureContext", "read_cache"]

B = TypeVar("B")  # a figure's budget: a frozen dataclass


@dataclass(frozen=True)
class DataChoice:
    """One data set as a figure uses it."""

    name: str  # AWA1, AWA2, CUB, SUN, APY
    data_root: Path | None  # None: the synthetic preset
    real_attributes: bool
    real_features: bool

    @property
    def source(self) -> str:
        """"real", "real attributes, synthetic features" or "synthetic" (for captions)."""
        if self.real_features:
            return "real"
        return "real attributes, synthetic features" if self.real_attributes else "synthetic"


@dataclass(frozen=True)
class EpochsBudget:
    """The budget of a figure that trains models with the reference recipe: its epochs."""

    epochs: int = 50  # the reference recipe
    max_seeds: int | None = None  # train only the first seeds of ctx.seeds (None: all)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"budget entry epochs must be a positive integer, got {self.epochs!r}")
        if self.max_seeds is not None and (isinstance(self.max_seeds, bool) or not isinstance(self.max_seeds, int)
                                           or self.max_seeds < 1):
            raise ValueError(f"budget entry max_seeds must be a positive integer or None, got {self.max_seeds!r}")


@dataclass(frozen=True)
class FigureContext:
    """Settings shared by every figure of one ``cnzsl figures`` run."""

    out: Path  # figures go to out/NAME.{png,pdf}; caches to out/data/
    fast: bool = False  # small budgets for smoke runs (each module defines its own)
    data_root: Path | None = None  # GBU root; None: synthetic presets
    device: str = "auto"
    seeds: tuple[int, ...] = (1, 2, 3)  # seeds averaged over where a figure trains models
    data_seed: int = 0  # seed of the synthetic data generator
    progress: bool = True
    only_datasets: tuple[str, ...] = ()  # restrict datasets() to these names (empty: all)
    extra: dict[str, Any] = field(default_factory=dict)  # per-figure overrides (tests use it)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", check_output_folder(self.out))
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root))
            if not self.data_root.is_dir():
                raise DataError(f"--data-root {self.data_root} is not a folder; pass the GBU root "
                                f"holding <DATASET>/att_splits.mat, or omit it for synthetic data")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise ValueError("seeds must name at least one seed, e.g. seeds=(1, 2, 3)")
        object.__setattr__(self, "only_datasets", tuple(canonical_dataset_name(d) for d in self.only_datasets))
        resolve_device(self.device)  # fails now, not in the middle of a figure

    # ------------------------------------------------------------------- budget
    def budget(self, key: str, full: B, fast: B) -> B:
        """``fast`` if ``self.fast`` else ``full`` (frozen dataclasses), with the entries of
        ``self.extra[key]`` replaced (tests and tiny runs set them).

        Raises:
            TypeError: ``extra[key]`` is not a dict.
            ValueError: it names an entry the budget does not have.
        """
        base = fast if self.fast else full
        overrides = self.extra.get(key, {})
        if not isinstance(overrides, dict):
            raise TypeError(f"ctx.extra[{key!r}] must be a dict of budget entries, got {type(overrides).__name__}")
        known = [f.name for f in dataclasses.fields(base)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown budget entr{'y' if len(unknown) == 1 else 'ies'} {unknown} in "
                             f"ctx.extra[{key!r}]; known: {', '.join(known)}")
        return dataclasses.replace(base, **overrides)

    # -------------------------------------------------------------------- paths
    def cache_path(self, name: str, suffix: str = ".json") -> Path:
        return self.out / "data" / f"{name}{suffix}"

    def figure_paths(self, name: str) -> tuple[Path, Path]:
        return self.out / f"{name}.png", self.out / f"{name}.pdf"

    # --------------------------------------------------------------------- data
    def datasets(self) -> list[DataChoice]:
        """The data sets to use, in :data:`analysis.datasets.DATASETS` order (module docstring)."""
        names = [d for d in DATASETS if not self.only_datasets or d in self.only_datasets]
        if self.data_root is None:
            return [DataChoice(d, None, False, False) for d in names]
        found = [DataChoice(d, self.data_root, True, (self.data_root / d / "res101.mat").is_file())
                 for d in names if (self.data_root / d / "att_splits.mat").is_file()]
        if not found:
            raise DataError(f"no <DATASET>/att_splits.mat under --data-root {self.data_root} "
                            f"(looked for {', '.join(names)}); omit --data-root for synthetic data")
        return found

    def load(self, choice: DataChoice) -> ZSLData:
        return load_dataset(choice.name, data_root=choice.data_root,
                            synthetic_features=choice.real_attributes and not choice.real_features,
                            seed=self.data_seed)

    # --------------------------------------------------------------- provenance
    def provenance(self, datasets: list[DataChoice] | None = None, **settings: Any) -> dict[str, Any]:
        """What a cache records beside its numbers: the run's settings, the figure's own
        ``settings`` (budgets), the data used and the environment."""
        return to_jsonable({
            "fast": self.fast, "seeds": self.seeds, "data_seed": self.data_seed,
            "data_root": self.data_root, "device": str(resolve_device(self.device)),
            "settings": settings,
            "datasets": [{"name": d.name, "source": d.source} for d in (datasets or [])],
            "environment": environment_info(resolve_device(self.device)),
        })


def read_cache(ctx: FigureContext, name: str) -> dict[str, Any]:
    """The JSON cache of figure ``name``; a FileNotFoundError naming the command that makes it."""
    path = ctx.cache_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: compute it first with `cnzsl figures --only {name} "
                                f"--out {ctx.out}` (without --plot-only)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and recompute with "
                         f"`cnzsl figures --only {name} --out {ctx.out} --overwrite`") from None
