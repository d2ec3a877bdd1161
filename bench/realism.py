"""The realism card of the synthetic default: does it show the seen bias of real features?

For each preset, train the reference model with the paper's recipe (``analysis.training``,
what ``cnzsl train`` runs) on the synthetic data of ``analysis.synthetic`` and print, as the
mean over seeds (``analysis.experiment.mean_std``):

    cos_s, cos_u   mean cosine of the test images (seen-test and unseen-test together) to
                   the seen and to the unseen prototypes, eval mode (logits / gamma^2)
    near_s, near_u mean over the same images of the cosine to the nearest seen and to the
                   nearest unseen prototype (the prototype each set would classify it as)
    orc_s, orc_u   cos_s and cos_u with "oracle" prototypes, the class means of all
                   features: what the data alone give, before any model is trained
    ZSL-U          unseen-test images among the unseen classes only
    S_only         seen-test images among the seen classes only (the AUSUC bound's S_max)
    U, S, H        GZSL with the seen-logit factor 0.95 and with 1.0 (every preset: the
                   authors' 1.0 on CUB is not used here, so the two factors compare)
    shrink         how far the unseen prototypes lie from the mean seen prototype pbar_S,
                   relative to the seen ones: mean_{c in U} ||p_c - pbar_S|| over
                   mean_{c in S} ||p_c - pbar_S|| (:func:`prototype_shrinkage`)
    U/ZSL          GZSL-U (factor 0.95) over ZSL-U: the share of unseen images not taken
                   for a seen class
    AUSUC, ratio   AUSUC and AUSUC / (S_only x ZSL-U), the bound it would reach with no
                   seen-unseen confusion

All metrics come from :mod:`analysis.metrics` and :mod:`analysis.evaluation`.  With
``--rows mlp,mlp+eq9,cn`` the ablation rows are trained too (H with factor 0.95).

    OMP_NUM_THREADS=1 python bench/realism.py --presets AWA1,CUB --epochs 50 --seeds 1,2,3
    python bench/realism.py ... --json card.json   # every seed's values, settings, environment
    python bench/realism.py --legacy ...     # the generator before the seen-bias mechanism
    python bench/realism.py --from-json card.json   # the checks of issue 14 on a saved card
    python bench/realism.py --hub-control --presets AWA1   # where the cosine gap comes from

After the card it prints issue 14's checks (:func:`card_checks`), each with what it read.

``--hub-control`` prints no card: it trains each row twice on the same data, once on the
seen classes (the ZSL protocol) and once with the unseen classes fitted too
(:func:`fitted_unseen_split`), and prints cos_s, cos_u and shrink of both on the same
images (:func:`hub_control`). If the gap cos_u - cos_s closes when the unseen classes are
fitted, it is made by which classes the training fitted, not by the features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from analysis.data import ZSLData  # noqa: E402
from analysis.evaluation import class_logits, evaluate  # noqa: E402
from analysis.experiment import mean_std  # noqa: E402
from analysis.io import environment_info, write_json  # noqa: E402
from analysis.metrics import zsl_accuracy  # noqa: E402
from analysis.model import preset_config  # noqa: E402
from analysis.normalization import normalize_attributes  # noqa: E402
from analysis.probe_mode import probe_mode  # noqa: E402
from analysis.synthetic import SYNTHETIC_PRESETS, SyntheticSpec, make_synthetic, synthetic_spec  # noqa: E402
from analysis.training import TrainConfig, train_model  # noqa: E402

FACTORS = (0.95, 1.0)


def measure(data, row: str, config: TrainConfig) -> dict[str, float]:
    """Train ``row`` on ``data`` with ``config``; the card's statistics in percent (cosines as is)."""
    model, _ = train_model(preset_config(row, data.attribute_dim, data.feature_dim), data, config)
    out: dict[str, float] = {}
    for factor in FACTORS:
        e = evaluate(model, data, attribute_norm=config.attribute_norm, seen_logit_scale=factor).percent()
        tag = f"{factor:g}"
        out.update({f"U@{tag}": e["gzsl_unseen"], f"S@{tag}": e["gzsl_seen"], f"H@{tag}": e["gzsl_harmonic"]})
    out["ZSL-U"], out["AUSUC"] = e["zsl_unseen"], e["ausuc"]  # neither depends on the factor
    attributes = normalize_attributes(data.attributes, config.attribute_norm)
    tests = torch.cat([data.test_seen, data.test_unseen])
    cos, prototypes = cosines_and_prototypes(model, data.features[tests], attributes)
    out["cos_s"] = float(cos[:, data.seen_classes].mean())
    out["cos_u"] = float(cos[:, data.unseen_classes].mean())
    out["near_s"] = float(cos[:, data.seen_classes].max(dim=1).values.mean())
    out["near_u"] = float(cos[:, data.unseen_classes].max(dim=1).values.mean())
    out["shrink"] = prototype_shrinkage(prototypes, data.seen_classes, data.unseen_classes)
    oracle = oracle_cosines(data, tests)
    out["orc_s"] = float(oracle[:, data.seen_classes].mean())
    out["orc_u"] = float(oracle[:, data.unseen_classes].mean())
    seen_rows = cos[: data.test_seen.numel()]  # tests put the seen-test images first; argmax ignores the scale
    out["S_only"] = 100.0 * zsl_accuracy(seen_rows, data.labels[data.test_seen], data.seen_classes)
    out["U/ZSL"] = out["U@0.95"] / max(out["ZSL-U"], 1e-12)
    out["ratio"] = 100.0 * out["AUSUC"] / max(out["S_only"] * out["ZSL-U"], 1e-12)
    return out


def cosines_and_prototypes(model, features: torch.Tensor, attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode cosines ``[n, C]`` (logits / gamma^2) of ``features`` to every class, and the
    prototypes ``[C, d_z]``, both on the CPU; the inputs are moved to the model's device first
    (with ``--device cuda`` the model trains there while the data stay on the CPU)."""
    device = next(model.parameters()).device
    attributes = attributes.to(device)
    cos = class_logits(model, features.to(device), attributes).cpu() / model.config.gamma ** 2
    with torch.no_grad(), probe_mode(model, "running"):
        prototypes = model.prototypes(attributes).cpu()
    return cos, prototypes


def prototype_shrinkage(prototypes: torch.Tensor, seen: torch.Tensor, unseen: torch.Tensor) -> float:
    """``mean_{c in U} ||p_c - pbar_S|| / mean_{c in S} ||p_c - pbar_S||``, pbar_S the mean seen prototype.

    Why the card's cos seen / unseen differ: write ``p_c = pbar_S + r_c``.  The mean test
    image direction mu lies close to pbar_S (cosine 0.97, CN on AWA1) and the r_c are
    nearly orthogonal to mu, so ``cos(mu, p_c) ~ |mu| (pbar_S . mu^) / sqrt(|pbar_S|^2 +
    |r_c|^2)``: a shrinkage below 1 (unseen prototypes nearer the common part than the seen
    ones, the regression toward the mean of a map fitted on the seen classes) makes the
    unseen prototypes closer to every image on average, whatever the data.
    """
    centre = prototypes[seen].mean(dim=0)
    spread = (prototypes - centre).norm(dim=1)
    return float(spread[unseen].mean() / spread[seen].mean())


def fitted_unseen_split(data: ZSLData, generator: torch.Generator) -> tuple[ZSLData, torch.Tensor, torch.Tensor]:
    """The hub's control: ``data`` with every unseen class but the last one fitted in training.

    For each unseen class ``u`` except the largest index, ``floor(n_u / 2)`` of its n_u
    test_unseen images, drawn by ``generator``, join trainval and the others join test_seen;
    the last unseen class keeps its images in test_unseen (a :class:`ZSLData` needs one).
    Features, labels and attributes are those of ``data``, which is not changed; the optional
    ``train`` / ``val`` subsets are dropped (training reads ``trainval``).

    Returns:
        ``(fitted, rows, classes)``: the new data; the images both trainings are measured
        on (``data.test_seen`` then the unseen images kept out of training), none of them
        in either trainval; the unseen classes the new data fits (``[K_u - 1]``).
    """
    unseen = data.unseen_classes
    if unseen.numel() < 2:
        raise ValueError(f"the hub control needs at least 2 unseen classes, got {unseen.numel()}")
    classes, held = unseen[:-1], unseen[-1:]
    labels = data.labels[data.test_unseen]
    train, test = [], []
    for u in classes.tolist():
        images = data.test_unseen[labels == u]
        if images.numel() < 2:
            raise ValueError(f"unseen class {u} has {images.numel()} test image(s); the hub control needs 2 "
                             "per class (one to fit, one to measure)")
        images = images[torch.randperm(images.numel(), generator=generator)]
        half = images.numel() // 2
        train.append(images[:half])
        test.append(images[half:])
    kept = torch.cat(test)
    fitted = replace(data, trainval=torch.cat([data.trainval, *train]), test_seen=torch.cat([data.test_seen, kept]),
                     test_unseen=data.test_unseen[labels == held], train=None, val=None)
    return fitted, torch.cat([data.test_seen, kept]), classes


def hub_control(data: ZSLData, row: str, config: TrainConfig) -> dict[str, dict[str, float]]:
    """cos_s, cos_u and shrink after training ``row`` on the seen classes, and with the unseen fitted.

    ``"seen only"`` trains on ``data``; ``"unseen fitted"`` on :func:`fitted_unseen_split`
    (split drawn by a generator seeded with ``config.seed``). Both are measured on the same
    images, the split's ``rows``, against the seen classes and the unseen classes the
    split fits (the held-out one is left out of both), cosines as in :func:`measure`.
    """
    fitted, rows, classes = fitted_unseen_split(data, torch.Generator().manual_seed(config.seed))
    seen = data.seen_classes
    attributes = normalize_attributes(data.attributes, config.attribute_norm)
    out: dict[str, dict[str, float]] = {}
    for name, train_data in (("seen only", data), ("unseen fitted", fitted)):
        model, _ = train_model(preset_config(row, data.attribute_dim, data.feature_dim), train_data, config)
        cos, prototypes = cosines_and_prototypes(model, data.features[rows], attributes)
        out[name] = {"cos_s": float(cos[:, seen].mean()), "cos_u": float(cos[:, classes].mean()),
                     "shrink": prototype_shrinkage(prototypes, seen, classes)}
    return out


def oracle_cosines(data, rows: torch.Tensor) -> torch.Tensor:
    """Cosines ``[n, C]`` of the features of ``rows`` to every class mean of all features."""
    f = data.features.float()
    sums = torch.zeros(data.num_classes, f.shape[1]).index_add_(0, data.labels, f)
    means = torch.nn.functional.normalize(sums, dim=1)
    return torch.nn.functional.normalize(f[rows], dim=1) @ means.T


COLUMNS = ("cos_s", "cos_u", "near_s", "near_u", "orc_s", "orc_u", "shrink", "ZSL-U", "S_only", "U@0.95", "S@0.95",
           "H@0.95", "U@1", "S@1", "H@1", "U/ZSL", "AUSUC", "ratio")


# Issue 14's checks (README, "The synthetic default, and how real it is"), decided on the CN
# row's means over seeds; the published CN H of docs/science.md section 8.1 (real features).
PUBLISHED_CN_H = {"AWA1": 67.8, "AWA2": 67.6, "CUB": 50.3, "SUN": 43.1}
S_ABOVE_U = ("AWA1", "AWA2", "CUB")  # the published CN rows have GZSL-S above GZSL-U there


def card_checks(card: list[dict]) -> list[tuple[str, str, str, bool]]:
    """``(preset, check, measured, holds)`` for every check of issue 14 that ``card`` decides.

    ``card`` holds entries as :func:`main` writes them (``preset``, ``row``, ``spec`` as a
    :class:`SyntheticSpec` or its dict, ``mean`` over seeds of :data:`COLUMNS`); the checks
    read the ``cn`` row, and the ablation check the ``mlp``, ``mlp+eq9`` and ``cn`` rows
    (H with the factor 0.95) when all three are present.
    """
    rows = {(e["preset"], e["row"]): e for e in card}
    out: list[tuple[str, str, str, bool]] = []
    for (preset, row), entry in rows.items():
        if row != "cn":
            continue
        m = entry["mean"]
        spec = entry["spec"]
        num_unseen = spec["num_unseen"] if isinstance(spec, dict) else spec.num_unseen
        chance = 100.0 / num_unseen

        def add(check: str, measured: str, holds: bool) -> None:
            out.append((preset, check, measured, bool(holds)))

        add("no hub: cos unseen <= cos seen", f"{m['cos_u']:.3f} vs {m['cos_s']:.3f}", m["cos_u"] <= m["cos_s"])
        add("GZSL-U / ZSL-U in [0.85, 0.95] (factor 0.95)", f"{m['U/ZSL']:.3f}", 0.85 <= m["U/ZSL"] <= 0.95)
        add("lower with the factor 1.0", f"{m['U@1'] / m['ZSL-U']:.3f}", m["U@1"] < m["U@0.95"])
        if preset in S_ABOVE_U:
            add("GZSL-S above GZSL-U", f"{m['S@0.95']:.1f} vs {m['U@0.95']:.1f}", m["S@0.95"] > m["U@0.95"])
        add("seen-only accuracy below 97 %", f"{m['S_only']:.2f}", m["S_only"] < 97.0)
        add("AUSUC <= 0.9 seen-only x ZSL-U", f"{m['ratio']:.3f}", m["ratio"] <= 0.9)
        add("H (0.95) >= H (1.0)", f"{m['H@0.95']:.1f} vs {m['H@1']:.1f}", m["H@0.95"] >= m["H@1"])
        if preset in PUBLISHED_CN_H:
            gap = m["H@0.95"] - PUBLISHED_CN_H[preset]
            add("H within 10 of the published CN H", f"{m['H@0.95']:.1f} vs {PUBLISHED_CN_H[preset]} ({gap:+.1f})",
                abs(gap) <= 10.0)
        add("ZSL-U at least 3x chance", f"{m['ZSL-U']:.1f} vs {chance:.1f}", m["ZSL-U"] >= 3 * chance)
        if (preset, "mlp") in rows and (preset, "mlp+eq9") in rows:
            h = {r: rows[(preset, r)]["mean"]["H@0.95"] for r in ("mlp", "mlp+eq9", "cn")}
            add("ablation: + CN >= + Eq. 9 > MLP (H, 0.95)",
                f"{h['cn']:.1f} / {h['mlp+eq9']:.1f} / {h['mlp']:.1f}", h["cn"] >= h["mlp+eq9"] > h["mlp"])
    return out


def print_checks(card: list[dict]) -> None:
    """Print :func:`card_checks` one line each, and how many hold."""
    checks = card_checks(card)
    for preset, check, measured, holds in checks:
        print(f"{preset:<6}{'yes' if holds else 'NO':<5}{check:<46}{measured}")
    print(f"{sum(c[3] for c in checks)} of {len(checks)} checks hold")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(SYNTHETIC_PRESETS), help="comma-separated synthetic presets")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seeds", default="1", help="comma-separated training seeds")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generator")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--rows", default="cn", help="ablation rows (analysis.model.PRESETS), e.g. mlp,mlp+eq9,cn")
    p.add_argument("--legacy", action="store_true",
                   help="the generator before the seen-bias mechanism: SyntheticSpec's field defaults for every knob")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a SyntheticSpec field (repeatable), e.g. --set noise=2")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write every seed's values with the settings and environment (atomically)")
    p.add_argument("--hub-control", action="store_true",
                   help="no card: cos_s, cos_u, shrink after training on the seen classes and with the unseen fitted")
    p.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="PATH",
                   help="train nothing: print the checks of cards written by --json (several are merged)")
    args = p.parse_args(argv)
    if args.from_json is not None:
        card: list[dict] = []
        for path in args.from_json:
            try:
                card += json.loads(path.read_text())["card"]
            except (OSError, ValueError, KeyError) as err:
                p.error(f"--from-json {path}: not a card written by --json ({err})")
        print_checks(card)
        return 0
    if args.json is not None and args.json.exists():
        p.error(f"--json {args.json} exists; choose another path (nothing is overwritten)")
    torch.set_num_threads(1)
    overrides: dict[str, float] = {}
    if args.legacy:
        fields = SyntheticSpec.__dataclass_fields__
        overrides.update({k: fields[k].default for k in SyntheticSpec("x", 2, 1, 1, 2, 0, 0).generator_knobs()})
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = float(value)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(f"epochs {args.epochs} · seeds {','.join(map(str, seeds))} · data seed {args.data_seed}"
          + (" · legacy generator" if args.legacy else "") + (f" · overrides {overrides}" if args.set else "") + " · means over seeds")
    if args.hub_control:
        return _print_hub_control(args, seeds, overrides)
    print(f"{'preset':<6}{'row':<9}" + "".join(f"{c:>8}" for c in COLUMNS))
    card: list[dict] = []
    for name in args.presets.split(","):
        t0 = time.perf_counter()
        data = make_synthetic(synthetic_spec(name, **overrides), seed=args.data_seed)
        generated = time.perf_counter() - t0
        for row in args.rows.split(","):
            runs = [measure(data, row, TrainConfig(epochs=args.epochs, seed=s, device=args.device,
                                                             progress=False))
                    for s in seeds]
            means = {c: mean_std([r[c] for r in runs])[0] for c in COLUMNS}
            card.append({"preset": name, "row": row, "spec": synthetic_spec(name, **overrides),
                         "mean": means, "per_seed": dict(zip(seeds, runs))})
            cells = "".join(f"{means[c]:8.3f}" if c.startswith(("cos", "near", "orc", "shrink", "U/", "ratio")) else f"{means[c]:8.1f}"
                            for c in COLUMNS)
            print(f"{name:<6}{row:<9}{cells}   ({time.perf_counter() - t0:.0f} s, data {generated:.1f} s)",
                  flush=True)
    print_checks(card)
    _write_json(args, overrides, "card", card)
    return 0


def _write_json(args: argparse.Namespace, overrides: dict[str, float], key: str, entries: list[dict]) -> None:
    """With ``--json``: ``entries`` under ``key``, with the settings and the environment (atomically)."""
    if args.json is None:
        return
    write_json(args.json, {key: entries, "settings": {**vars(args), "overrides": overrides},
                           "data": "synthetic (analysis.synthetic), a stand-in for real features",
                           "environment": environment_info(args.device if args.device != "auto" else None)})
    print(f"wrote {args.json}")


def _print_hub_control(args: argparse.Namespace, seeds: list[int], overrides: dict[str, float]) -> int:
    """``--hub-control``: :func:`hub_control` per preset, row and seed, means over seeds; JSON with --json."""
    print(f"{'preset':<6}{'row':<9}{'trained on':<15}{'cos_s':>8}{'cos_u':>8}{'gap':>8}{'shrink':>8}")
    entries: list[dict] = []
    for name in args.presets.split(","):
        t0 = time.perf_counter()
        data = make_synthetic(synthetic_spec(name, **overrides), seed=args.data_seed)
        for row in args.rows.split(","):
            runs = {s: hub_control(data, row, TrainConfig(epochs=args.epochs, seed=s, device=args.device,
                                                          progress=False)) for s in seeds}
            means = {fit: {k: mean_std([runs[s][fit][k] for s in seeds])[0] for k in ("cos_s", "cos_u", "shrink")}
                     for fit in ("seen only", "unseen fitted")}
            for fit, m in means.items():
                print(f"{name:<6}{row:<9}{fit:<15}{m['cos_s']:8.3f}{m['cos_u']:8.3f}{m['cos_u'] - m['cos_s']:+8.3f}"
                      f"{m['shrink']:8.3f}   ({time.perf_counter() - t0:.0f} s)", flush=True)
            entries.append({"preset": name, "row": row, "spec": synthetic_spec(name, **overrides), "mean": means,
                            "per_seed": runs})
    _write_json(args, overrides, "hub_control", entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
