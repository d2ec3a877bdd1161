"""The realism card of `bench/realism.py` (issue 14): each column against its definition."""

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from analysis.evaluation import class_logits, evaluate
from analysis.model import preset_config
from analysis.normalization import normalize_attributes
from analysis.synthetic import SEEN_BIAS, SyntheticSpec, make_synthetic
from analysis.training import TrainConfig

_spec = importlib.util.spec_from_file_location("realism", Path(__file__).resolve().parents[1] / "bench" / "realism.py")
realism = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("realism", realism)
_spec.loader.exec_module(realism)

TINY = replace(SyntheticSpec("TINY", 6, 3, 8, 240, 60, 60, feature_dim=32), **SEEN_BIAS)


def test_oracle_cosines_are_cosines_to_the_class_means_by_hand() -> None:
    # two classes, features (1, 0) and (3, 0) of class 0 (mean (2, 0)), (0, 2) of class 1
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    fake = type("D", (), {"features": features, "labels": torch.tensor([0, 0, 1]), "num_classes": 2})()
    cos = realism.oracle_cosines(fake, torch.tensor([0, 2]))
    assert torch.allclose(cos, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tilted = type("D", (), {"features": torch.tensor([[1.0, 1.0], [0.0, 1.0]]), "labels": torch.tensor([0, 0]),
                            "num_classes": 1})()
    # class mean (0.5, 1), unit (1, 2)/sqrt(5); row (1, 1)/sqrt(2): cosine 3 / sqrt(10)
    assert realism.oracle_cosines(tilted, torch.tensor([0])).item() == pytest.approx(3 / 10 ** 0.5, rel=1e-6)


def test_prototype_shrinkage_by_hand() -> None:
    # seen prototypes (2, 0) and (0, 2): centre (1, 1), each at distance sqrt(2);
    # unseen (1, 1) at 0 and (1, 3) at 2: mean 1 against sqrt(2)
    protos = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 3.0]])
    value = realism.prototype_shrinkage(protos, torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert value == pytest.approx(1 / 2 ** 0.5, rel=1e-6, abs=0)
    # the centre is the mean of the seen prototypes only: an unseen one far away does not move it
    far = torch.tensor([[2.0, 0.0], [0.0, 2.0], [101.0, 1.0]])
    assert realism.prototype_shrinkage(far, torch.tensor([0, 1]), torch.tensor([2])) == pytest.approx(
        100 / 2 ** 0.5, rel=1e-6, abs=0)


def test_every_column_follows_its_definition() -> None:
    data = make_synthetic(TINY, seed=0)
    config = TrainConfig(epochs=2, batch_size=32, seed=3, progress=False)
    out = realism.measure(data, "cn", config)
    # the same training again, to recompute the columns by hand from the model
    from analysis.training import train_model

    model, _ = train_model(preset_config("cn", data.attribute_dim, data.feature_dim), data, config)
    attributes = normalize_attributes(data.attributes, config.attribute_norm)
    tests = torch.cat([data.test_seen, data.test_unseen])
    cos = class_logits(model, data.features[tests], attributes) / model.config.gamma ** 2
    seen, unseen = data.seen_classes, data.unseen_classes
    assert out["cos_s"] == pytest.approx(float(cos[:, seen].mean()), rel=1e-6, abs=0)
    assert out["cos_u"] == pytest.approx(float(cos[:, unseen].mean()), rel=1e-6, abs=0)
    assert out["near_s"] == pytest.approx(float(cos[:, seen].max(1).values.mean()), rel=1e-6, abs=0)
    assert out["near_s"] > out["cos_s"] and out["near_u"] > out["cos_u"]
    with torch.no_grad():
        protos = model.eval().prototypes(attributes)
    centre = protos[seen].mean(0)
    by_hand = (protos[unseen] - centre).norm(dim=1).mean() / (protos[seen] - centre).norm(dim=1).mean()
    assert out["shrink"] == pytest.approx(float(by_hand), rel=1e-6, abs=0)
    for factor, tag in ((0.95, "0.95"), (1.0, "1")):
        e = evaluate(model, data, attribute_norm=config.attribute_norm, seen_logit_scale=factor).percent()
        assert (out[f"U@{tag}"], out[f"S@{tag}"], out[f"H@{tag}"]) == pytest.approx(
            (e["gzsl_unseen"], e["gzsl_seen"], e["gzsl_harmonic"]), rel=1e-6, abs=0)
    assert out["U/ZSL"] == pytest.approx(out["U@0.95"] / out["ZSL-U"], rel=1e-12, abs=0)
    assert out["ratio"] == pytest.approx(100 * out["AUSUC"] / (out["S_only"] * out["ZSL-U"]), rel=1e-12, abs=0)
    # S_only: seen test images among the seen classes only, counted by hand (balanced per class)
    logits = class_logits(model, data.features[data.test_seen], attributes)[:, seen]
    labels = data.labels[data.test_seen]
    hits = seen[logits.argmax(1)] == labels
    per_class = [float(hits[labels == c].float().mean()) for c in labels.unique()]
    assert out["S_only"] == pytest.approx(100 * sum(per_class) / len(per_class), rel=1e-6, abs=0)


def test_json_holds_every_seed_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(realism.SYNTHETIC_PRESETS, "TINY", TINY)
    path = tmp_path / "card.json"
    argv = ["--presets", "TINY", "--epochs", "1", "--seeds", "1,2", "--device", "cpu", "--json", str(path)]
    assert realism.main(argv) == 0
    card = json.loads(path.read_text())
    assert card["complete"] is True and "synthetic" in card["data"]
    (entry,) = card["card"]
    assert entry["preset"] == "TINY" and set(entry["per_seed"]) == {"1", "2"}
    for column in realism.COLUMNS:
        values = [entry["per_seed"][s][column] for s in ("1", "2")]
        assert entry["mean"][column] == pytest.approx(sum(values) / 2, rel=1e-12, abs=0)
    before = path.read_bytes()
    with pytest.raises(SystemExit):
        realism.main(argv)
    assert "exists" in capsys.readouterr().err and path.read_bytes() == before
