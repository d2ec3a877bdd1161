"""Time the vectorized Monte Carlo over initializations (variance/ claims V2-V4).

Draws ``--num-inits`` random initializations of the reference 3-layer CN embedder
(``Linear(d_a,1024) -> ReLU -> Linear(1024,1024) -> S -> ReLU -> S -> Linear(1024,2048)``,
Eq. (10), biases) and measures the prototype and logit moments on CUB's attributes (the
real ones when ``../shared/data/gbu/CUB/att_splits.mat`` exists, else the synthetic preset's),
as ``variance.prototype_variance.measure_prototype_moments`` does for ``cnzsl variance``.
Baseline in the same run: the same statistic from a Python loop over ``nn.Module`` models
(``--loop-inits`` of them, extrapolated per 1000 inits).

    python bench/variance_mc.py [--num-inits 1000] [--chunk 16] [--loop-inits 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from analysis import make_synthetic, normalize_attributes, preset_config, read_att_splits
from analysis.class_standardization import frozen_class_statistics
from analysis.training import build_model
from variance.prototype_variance import check_v4, measure_prototype_moments

CUB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gbu" / "CUB" / "att_splits.mat"


def python_loop(config, attributes: torch.Tensor, num_inits: int) -> float:
    """The baseline: one nn.Module per seed, prototypes computed one model at a time."""
    start = time.perf_counter()
    with torch.no_grad():
        for seed in range(num_inits):
            model = build_model(config, seed).train()
            pre = model.embedder[:-1]  # drop the output ReLU: pre-activation prototypes
            with frozen_class_statistics(model):
                pre(attributes).double().pow(2).mean()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-inits", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--loop-inits", type=int, default=20)
    args = parser.parse_args()
    if CUB.is_file():
        raw, source = read_att_splits(CUB).attributes, "real"
    else:
        raw, source = make_synthetic("CUB").attributes, "synthetic"
    att = normalize_attributes(raw, "l2_sqrt")
    z = make_synthetic("CUB").features[:64]
    config = preset_config("cn", att.shape[1])
    start = time.perf_counter()
    moments = measure_prototype_moments(config, att, z, num_inits=args.num_inits, chunk=args.chunk,
                                        generator=torch.Generator().manual_seed(0))
    vectorized = time.perf_counter() - start
    loop = python_loop(config, att, args.loop_inits) * 1000 / args.loop_inits
    row = check_v4(config, att, num_inits=50, generator=torch.Generator().manual_seed(1))[0]
    print(f"CUB ({source} attributes, K={att.shape[0]}, d_a={att.shape[1]}) · reference CN embedder "
          f"({sum(p.numel() for p in build_model(config, 0).parameters()) / 1e6:.2f} M parameters) · "
          f"{torch.get_num_threads()} threads")
    print(f"  vectorized, {args.num_inits} inits (chunk {args.chunk})   {vectorized:7.1f} s   "
          f"Var[p] = {moments.prototype}")
    print(f"  Python loop of models, per 1000 inits     {loop:7.1f} s   (from {args.loop_inits} inits)")
    print(f"  speed-up                                  {loop / vectorized * args.num_inits / 1000:7.2f} x")
    print(f"  sanity: V4 check with 50 inits -> {row.verdict} (z = {row.z:+.2f})")


if __name__ == "__main__":
    main()
