"""Time the project's trainer against the authors' published training loop, in one run.

Baseline (rebuilt from the authors' notebook): a ``DataLoader`` over a Python list of
``(feature, label)`` pairs, batch 256, shuffled, each batch collated into tensors and
moved to the device, the seen-class attributes passed through the model every step.
Project: :func:`analysis.training.train` (device-resident data, index slicing, one
device synchronization per epoch).  Both run the same model, recipe, data and epochs;
the ratio ``baseline seconds / project seconds`` is printed (> 1: the project is faster).

    python bench/train_speed.py [--dataset AWA1] [--epochs 5] [--device auto] [--repeats 2]

Absolute seconds are not comparable across machines or runs; the ratio within one run is.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from analysis import (
    TrainConfig,
    build_model,
    load_dataset,
    normalize_attributes,
    preset_config,
    resolve_device,
    train,
)
from analysis.io import environment_info, write_json


def authors_loop(data, config: TrainConfig, preset: str) -> float:
    """The authors' loop: DataLoader over a list of pairs. Returns wall seconds."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # the notebook seeds the global RNG; so must its DataLoader
    model = build_model(preset_config(preset, data.attribute_dim, data.feature_dim), config.seed).to(device)
    seen = data.seen_classes
    attrs = normalize_attributes(data.attributes, config.attribute_norm)[seen].to(device)
    remap = {int(c): i for i, c in enumerate(seen)}
    x_train = data.features[data.trainval].numpy()
    y_train = [remap[int(y)] for y in data.labels[data.trainval]]
    loader = DataLoader(list(zip(x_train, y_train)), batch_size=config.batch_size, shuffle=True)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=config.lr_step_epochs, gamma=config.lr_decay)
    _sync(device)
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for feats, targets in loader:
            logits = model(feats.to(device), attrs)
            loss = nn.functional.cross_entropy(logits, targets.to(device))
            optim.zero_grad()
            loss.backward()
            optim.step()
        sched.step()
    _sync(device)
    return time.perf_counter() - start


def project_loop(data, config: TrainConfig, preset: str) -> float:
    model = build_model(preset_config(preset, data.attribute_dim, data.feature_dim), config.seed)
    return train(model, data, config).seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="AWA1")
    parser.add_argument("--preset", default="cn")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best of each is kept")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    config = TrainConfig(epochs=args.epochs, device=args.device, progress=False)
    times = {"authors": [], "project": []}
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
        times["authors"].append(authors_loop(data, config, args.preset))
        times["project"].append(project_loop(data, config, args.preset))
    best = {k: min(v) for k, v in times.items()}
    ratio = best["authors"] / best["project"]
    device = resolve_device(args.device)
    print(f"{args.dataset} (synthetic, {data.trainval.numel()} trainval images) · preset {args.preset} · "
          f"{args.epochs} epochs · {device} · {torch.get_num_threads()} threads")
    print(f"  authors' loop (DataLoader over a list)  {best['authors']:8.2f} s   (runs: "
          + ", ".join(f"{t:.2f}" for t in times["authors"]) + ")")
    print(f"  project trainer (device-resident)       {best['project']:8.2f} s   (runs: "
          + ", ".join(f"{t:.2f}" for t in times["project"]) + ")")
    print(f"  speed-up (authors / project)            {ratio:8.2f} x")
    if args.json:
        write_json(args.json, {"args": vars(args), "seconds": times, "best": best, "ratio": ratio,
                               "environment": environment_info(device)})


if __name__ == "__main__":
    main()
