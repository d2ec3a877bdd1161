"""save_checkpoint / load_checkpoint: exact round trips, architecture checks, foreign files,
atomic writes."""

from __future__ import annotations

import os
import re

import pytest
import torch
from torch import nn

from analysis.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint, state_digest
from analysis.class_standardization import ClassStandardization
from analysis.model import AttributeEmbedderModel, ClassifierConfig, LinearClassifier, preset_config

ATTRIBUTES = torch.rand(4, 5, generator=torch.Generator().manual_seed(1))
FEATURES = torch.rand(3, 7, generator=torch.Generator().manual_seed(2))


def embedder(**overrides) -> AttributeEmbedderModel:
    config = preset_config("cn", attribute_dim=5, feature_dim=7, **{"hidden_dims": (6, 6), **overrides})
    return AttributeEmbedderModel(config, generator=torch.Generator().manual_seed(0))


def trained_embedder() -> AttributeEmbedderModel:
    """An embedder whose CN running statistics moved away from their zeros/ones start."""
    model = embedder()
    model.train()
    with torch.no_grad():
        model(FEATURES, ATTRIBUTES)
    model.eval()
    return model


def classifier(**overrides) -> LinearClassifier:
    return LinearClassifier(ClassifierConfig(**{"num_classes": 3, "feature_dim": 7, **overrides}),
                            generator=torch.Generator().manual_seed(0))


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


# -- round trips ---------------------------------------------------------------------------
def test_embedder_round_trip_is_bitwise(tmp_path):
    model = trained_embedder()
    cn = [m for m in model.modules() if isinstance(m, ClassStandardization)]
    assert cn, "preset 'cn' should contain class standardization"
    for layer in cn:  # the running statistics are non-trivial, so the test can see them
        assert not torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))
        assert not torch.equal(layer.running_var, torch.ones_like(layer.running_var))

    path = save_checkpoint(tmp_path / "model.pt", model)
    assert path == tmp_path / "model.pt" and path.is_file()
    loaded, metadata = load_checkpoint(path)
    assert type(loaded) is AttributeEmbedderModel
    assert loaded.config == model.config
    assert metadata == {}
    assert_same_state(loaded, model)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(FEATURES, ATTRIBUTES), model(FEATURES, ATTRIBUTES))


def test_classifier_round_trip_is_bitwise(tmp_path):
    model = classifier()
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "clf.pt", model))
    assert type(loaded) is LinearClassifier and loaded.config == model.config
    assert_same_state(loaded, model)
    loaded.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(FEATURES, torch.zeros(3, 5)), model(FEATURES, torch.zeros(3, 5)))


def test_metadata_round_trips(tmp_path):
    metadata = {"epochs": 3, "lr": 1e-3, "dataset": "CUB", "dims": (6, 6),
                "metrics": {"H": 0.5, "per_class": torch.tensor([0.25, 0.75])}}
    _, loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", classifier(), metadata))
    assert loaded == {"epochs": 3, "lr": 1e-3, "dataset": "CUB", "dims": [6, 6],
                      "metrics": {"H": 0.5, "per_class": [0.25, 0.75]}}


def test_load_into_same_config(tmp_path):
    source = trained_embedder()
    path = save_checkpoint(tmp_path / "model.pt", source)
    target = AttributeEmbedderModel(source.config, generator=torch.Generator().manual_seed(99))
    assert not torch.equal(target.embedder[0].weight, source.embedder[0].weight)
    loaded, _ = load_checkpoint(path, into=target)
    assert loaded is target
    assert_same_state(target, source)


def test_load_into_classifier_of_same_config(tmp_path):
    path = save_checkpoint(tmp_path / "clf.pt", classifier())
    target = LinearClassifier(ClassifierConfig(num_classes=3, feature_dim=7))
    assert load_checkpoint(path, into=target)[0] is target
    assert_same_state(target, classifier())


# -- architecture mismatches -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"hidden_dims": (6, 8)}, "hidden_dims"), ({"cn_layers": ()}, "cn_layers"),
     ({"cn_layers": (0,)}, "cn_layers"), ({"gamma": 3.0}, "gamma")],
)
def test_load_into_different_config_names_field(tmp_path, overrides, field):
    source = trained_embedder()
    path = save_checkpoint(tmp_path / "model.pt", source)
    target = embedder(**overrides)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=rf"different architecture \(.*{field}: file"):
        load_checkpoint(path, into=target)
    after = target.state_dict()  # no weight touched before the error
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_different_config_lists_every_field(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", embedder())
    with pytest.raises(ValueError, match="hidden_dims.*cn_layers"):
        load_checkpoint(path, into=embedder(hidden_dims=(6, 6, 6), cn_layers=(0,)))


def test_classifier_different_config(tmp_path):
    path = save_checkpoint(tmp_path / "clf.pt", classifier())
    with pytest.raises(ValueError, match=re.escape("num_classes: file 3 vs model 4")):
        load_checkpoint(path, into=classifier(num_classes=4))


def test_load_into_different_model_type(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", embedder())
    with pytest.raises(ValueError, match="holds a AttributeEmbedderModel, cannot load it into a LinearClassifier"):
        load_checkpoint(path, into=classifier())
    path = save_checkpoint(tmp_path / "clf.pt", classifier())
    with pytest.raises(ValueError, match="holds a LinearClassifier, cannot load it into a AttributeEmbedderModel"):
        load_checkpoint(path, into=embedder())


# -- missing and foreign files ---------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(0)).tolist()))
    with pytest.raises(ValueError, match="is not a checkpoint") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # never torch's advice to run the file's code


def test_a_flipped_byte_in_a_weight_is_an_error_not_another_model(tmp_path):
    model = trained_embedder()
    path = save_checkpoint(tmp_path / "model.pt", model)
    raw = bytearray(path.read_bytes())
    weight = max(model.parameters(), key=lambda p: p.numel()).detach().contiguous()  # 36 floats
    at = raw.find(weight.numpy().tobytes())
    assert at > 0  # torch stores tensors uncompressed: the weight's bytes are in the file
    raw[at + 17] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="is corrupted: its tensors do not match the sha256"):
        load_checkpoint(path)


def test_state_digest_sees_names_dtypes_shapes_and_values():
    base = {"a": torch.arange(6.0), "b": torch.zeros(2, dtype=torch.int64)}
    d = state_digest(base)
    assert d == state_digest({"b": base["b"].clone(), "a": base["a"].clone()})  # order-free, value-based
    changed = [
        {**base, "a": base["a"].clone().index_fill_(0, torch.tensor([3]), 3.5)},
        {**base, "a": base["a"].reshape(2, 3)},
        {**base, "a": base["a"].double()},
        {"c": base["a"], "b": base["b"]},
    ]
    assert len({d, *(state_digest(c) for c in changed)}) == 5


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        load_checkpoint(path)


def test_plain_dict_without_format(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": classifier().state_dict()}, path)
    with pytest.raises(ValueError, match=re.escape(f"is not a {CHECKPOINT_FORMAT} file (found format None)")):
        load_checkpoint(path)


def test_wrong_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": "cnzsl-checkpoint/99"}, path)
    with pytest.raises(ValueError, match="found format 'cnzsl-checkpoint/99'"):
        load_checkpoint(path)


def test_non_dict_payload(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="found format 'Tensor'"):
        load_checkpoint(path)


def test_unknown_model_type(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_type": "Transformer", "model_config": {},
                "state_dict": {}, "metadata": {}}, path)
    with pytest.raises(ValueError, match="unknown model type 'Transformer'"):
        load_checkpoint(path)


# -- atomic writes ---------------------------------------------------------------------------
def test_save_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path / "model.pt", embedder(), {"a": 1})
    save_checkpoint(tmp_path / "sub" / "clf.pt", classifier())
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "model.pt", "sub", "sub/clf.pt"]


def test_overwrite_replaces_file(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", classifier(), {"version": 1})
    old_inode = os.stat(path).st_ino
    new_model = LinearClassifier(ClassifierConfig(num_classes=3, feature_dim=7),
                                 generator=torch.Generator().manual_seed(5))
    save_checkpoint(path, new_model, {"version": 2})
    assert os.stat(path).st_ino != old_inode  # renamed over, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    loaded, metadata = load_checkpoint(path)
    assert metadata == {"version": 2}
    assert_same_state(loaded, new_model)


def test_failed_overwrite_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "model.pt", classifier(), {"version": 1})
    old_bytes = path.read_bytes()

    def torn_save(obj, f):
        f.write(b"half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, embedder(), {"version": 2})
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert load_checkpoint(path)[1] == {"version": 1}


# -- unsupported models -----------------------------------------------------------------------
@pytest.mark.parametrize("model", [nn.Linear(3, 2), nn.Sequential(nn.ReLU())])
def test_save_unsupported_model(tmp_path, model):
    with pytest.raises(TypeError, match=f"cannot checkpoint a {type(model).__name__}"):
        save_checkpoint(tmp_path / "x.pt", model)
    assert list(tmp_path.iterdir()) == []


# -- a researcher's model, saved with its builder ---------------------------------------------
def _residual_spec(**kwargs):
    from analysis.user_model import resolve_model

    return resolve_model("examples/residual_layernorm.py:ResidualLayerNormEmbedder", {"width": 8, "depth": 1, **kwargs})


def test_a_model_of_the_contract_round_trips_through_its_builder(tmp_path, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)  # the builder is given relative to the repository
    spec = _residual_spec()
    model = spec.build(5, 7, generator=torch.Generator().manual_seed(4))
    path = save_checkpoint(tmp_path / "model.pt", model, {"note": "mine"}, builder=spec, dims=(5, 7))
    monkeypatch.chdir(tmp_path)  # stored absolute: loads from anywhere
    loaded, metadata = load_checkpoint(path)
    assert type(loaded).__name__ == "ResidualLayerNormEmbedder" and metadata == {"note": "mine"}
    assert_same_state(model, loaded)
    torch.testing.assert_close(loaded(FEATURES, ATTRIBUTES), model(FEATURES, ATTRIBUTES), rtol=0, atol=0)


def test_a_model_without_its_builder_is_refused(tmp_path):
    spec = _residual_spec()
    with pytest.raises(TypeError, match="cannot checkpoint a ResidualLayerNormEmbedder without its builder"):
        save_checkpoint(tmp_path / "model.pt", spec.build(5, 7))
    with pytest.raises(TypeError, match=r"needs dims=\(attribute_dim, feature_dim\)"):
        save_checkpoint(tmp_path / "model.pt", spec.build(5, 7), builder=spec)


def test_a_builder_that_now_builds_another_architecture_is_one_error(tmp_path, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    model = _residual_spec(width=6).build(5, 7)
    path = save_checkpoint(tmp_path / "model.pt", model, builder=_residual_spec(), dims=(5, 7))  # says width 8
    with pytest.raises(ValueError, match="now builds another architecture than the one saved"):
        load_checkpoint(path)
