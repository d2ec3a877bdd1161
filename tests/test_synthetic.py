"""Synthetic generator: real GBU sizes, format, determinism, learnable zero-shot transfer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from analysis.data import DataError
from analysis.evaluation import evaluate
from analysis.gbu import read_att_splits
from analysis.model import preset_config
from analysis.synthetic import (
    SEEN_BIAS,
    SEMI_SYNTHETIC,
    SEMI_SYNTHETIC_BY_DATASET,
    SYNTHETIC_PRESETS,
    UNSEEN_LOOKALIKES,
    SyntheticSpec,
    make_semi_synthetic,
    make_synthetic,
    synthesize_features,
    synthetic_spec,
    unexplained_parts,
)
from analysis.training import TrainConfig, train_model
from tests.conftest import TINY_SPEC, real_att_splits

# Sizes published with the GBU benchmark (Xian et al. 2018, table 1) for the two data
# sets whose files are not in ../shared: N, d_a, C, seen, unseen, trainval, test_seen, test_unseen.
PUBLISHED = {"AWA1": (30475, 85, 50, 40, 10, 19832, 4958, 5685),
             "APY": (15339, 64, 32, 20, 12, 5932, 1483, 7924)}


@pytest.mark.parametrize("name", ["AWA2", "CUB", "SUN"])
def test_presets_match_the_real_att_splits_files(name):
    real = read_att_splits(real_att_splits(name))
    spec = SYNTHETIC_PRESETS[name]
    n_unseen = len((real.path.parent / "testclasses.txt").read_text().split())
    assert (spec.attribute_dim, spec.num_classes, spec.num_unseen) == (
        real.attributes.shape[1], real.attributes.shape[0], n_unseen)
    assert (spec.trainval, spec.test_seen, spec.test_unseen) == (
        real.trainval.numel(), real.test_seen.numel(), real.test_unseen.numel())
    assert spec.num_samples == real.num_samples_indexed


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_match_the_published_sizes(name):
    s = SYNTHETIC_PRESETS[name]
    assert (s.num_samples, s.attribute_dim, s.num_classes, s.num_seen, s.num_unseen,
            s.trainval, s.test_seen, s.test_unseen) == PUBLISHED[name]
    assert s.feature_dim == 2048


def test_synthetic_data_has_the_gbu_structure(tiny_data):
    d = tiny_data
    assert d.source == "synthetic" and d.features.shape == (390, 32) and d.attributes.shape == (9, 12)
    assert (d.features >= 0).all() and (d.attributes >= 0).all()
    torch.testing.assert_close(d.attributes.norm(dim=1), torch.ones(9))
    assert d.seen_classes.tolist() == list(range(6)) and d.unseen_classes.tolist() == [6, 7, 8]
    counts = torch.bincount(d.labels[d.trainval])
    assert counts.max() - counts.min() <= 1  # balanced classes
    assert torch.unique(torch.cat([d.trainval, d.test_seen, d.test_unseen])).numel() == 390


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (make_synthetic(TINY_SPEC, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.features, c.features)


def test_features_depend_on_attributes_not_only_labels():
    # same labels, same seed: permuting the attributes of two classes changes their features
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    att = torch.rand(4, 6)
    labels = torch.tensor([0, 1, 2, 3] * 50)
    z = synthesize_features(att, labels, feature_dim=64, noise=0.0, unexplained=0.0, instance_jitter=0.0,
                            generator=g())
    z_swapped = synthesize_features(att[[1, 0, 2, 3]], labels, feature_dim=64, noise=0.0, instance_jitter=0.0,
                                    unexplained=0.0, generator=g())
    torch.testing.assert_close(z_swapped[labels == 0], z[labels == 1])


def test_zero_shot_transfer_is_learnable():
    # 20 seen, 5 unseen classes: ZSL accuracy among the unseen classes is far above the
    # 1/5 chance level after a short training of a small CN model (seeds 1-3 gave
    # 0.60-0.77 ZSL and 0.47-0.55 H; chance is 0.2 and about 0.2)
    spec = replace(TINY_SPEC, num_seen=20, num_unseen=5, attribute_dim=24, trainval=1000,
                   test_seen=200, test_unseen=250, feature_dim=256, noise=1.0, unexplained=0.5)
    data = make_synthetic(spec, seed=1)
    model, _ = train_model(preset_config("cn", 24, 256, hidden_dims=(64, 64)), data,
                           TrainConfig(epochs=10, batch_size=64, lr=2e-3, progress=False))
    scores = evaluate(model, data)
    assert scores.zsl_unseen > 0.5, scores
    assert scores.gzsl_harmonic > 0.3, scores


def test_presets_switch_the_seen_bias_on_and_the_field_defaults_keep_it_off():
    legacy = SyntheticSpec("X", 2, 1, 1, 2, 0, 0)
    assert (legacy.seen_confusion, legacy.unseen_confusion, legacy.sparsity_gain, legacy.sparsity_offset) == (0, 0, 1, 1)
    for spec in SYNTHETIC_PRESETS.values():
        assert spec.unseen_confusion > 0 and spec.seen_confusion > 0 and spec.sparsity_offset > 1
        assert set(SEEN_BIAS) <= set(spec.generator_knobs())
    # the unseen look-alikes (AUSUC below its bound) on every preset but APY, where they
    # took too many seen images for unseen ones (the presets' comments say why)
    lookalikes = {name for name, spec in SYNTHETIC_PRESETS.items() if spec.unseen_lookalike_fraction > 0}
    assert lookalikes == {"AWA1", "AWA2", "CUB", "SUN"}
    for name in lookalikes:
        spec = SYNTHETIC_PRESETS[name]
        assert 0 < spec.unseen_lookalike_share <= 1 and spec.confusion_temperature == UNSEEN_LOOKALIKES[
            "confusion_temperature"]


def test_without_confusion_the_seen_classes_change_nothing():
    # the look-alikes are drawn only when a confusion share is positive: same draws, same features
    att, labels = torch.rand(5, 6), torch.tensor([0, 1, 2, 3, 4] * 20)
    z = synthesize_features(att, labels, feature_dim=64, generator=torch.Generator().manual_seed(0))
    z_seen = synthesize_features(att, labels, feature_dim=64, seen_classes=torch.tensor([0, 1, 2]),
                                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z_seen)


def test_unexplained_parts_have_a_lognormal_strength_of_mean_one():
    # spread 0: exactly the generator's next C x d_z normals; spread s: row c scaled by
    # exp(s nu_c - s^2 / 2) with nu_c the C normals drawn after them
    c, d, s = 4000, 3, 0.5
    plain = unexplained_parts(c, d, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.randn(c, d, generator=torch.Generator().manual_seed(3)))
    g = torch.Generator().manual_seed(3)
    zeta, nu = torch.randn(c, d, generator=g), torch.randn(c, 1, generator=g)
    spread = unexplained_parts(c, d, s, torch.Generator().manual_seed(3))
    torch.testing.assert_close(spread, zeta * torch.exp(s * nu - s * s / 2), rtol=1e-6, atol=0)
    r = (spread / zeta)[:, 0].double()  # r_c, lognormal: mean 1, variance exp(s^2) - 1
    se = ((torch.exp(torch.tensor(s * s)) - 1) / c).sqrt()
    assert abs(float(r.mean()) - 1) < 4 * float(se), (float(r.mean()), float(se))
    assert float(r.log().std()) == pytest.approx(s, rel=0.05)


def test_without_spread_the_features_are_those_of_the_generator_without_it():
    att, labels = torch.rand(5, 6), torch.tensor([0, 1, 2, 3, 4] * 20)
    kw = dict(feature_dim=64, seen_classes=torch.tensor([0, 1, 2]), unseen_confusion=0.3, seen_confusion=0.2)
    z = synthesize_features(att, labels, **kw, generator=torch.Generator().manual_seed(0))
    z0 = synthesize_features(att, labels, **kw, unexplained_spread=0.0, generator=torch.Generator().manual_seed(0))
    z1 = synthesize_features(att, labels, **kw, unexplained_spread=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z0) and not torch.equal(z, z1)


def test_a_class_with_a_stronger_unexplained_part_has_features_farther_from_the_others():
    # every class has the same attributes, no noise, no jitter, linear regime (o = -20, g
    # small): class means differ only by r_c rho zeta_c, so a class's distance to the mean
    # of the classes grows with r_c (Spearman correlation near 1)
    c, d = 40, 512
    att, labels = torch.ones(c, 6), torch.arange(c)
    kw = dict(feature_dim=d, noise=0.0, instance_jitter=0.0, sparsity_gain=0.05, sparsity_offset=-1.0)
    z = synthesize_features(att, labels, **kw, unexplained_spread=0.8, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    torch.randn(64, 6, generator=g), torch.randn(d, 64, generator=g)  # A and B, drawn first
    torch.randn(c, d, generator=g)  # zeta
    r = torch.exp(0.8 * torch.randn(c, generator=g) - 0.32)  # r_c, by the formula
    distance = (z - z.mean(dim=0)).norm(dim=1)
    rank = lambda v: v.argsort().argsort().double()  # noqa: E731
    spearman = float(torch.corrcoef(torch.stack([rank(distance), rank(r)]))[0, 1])
    assert spearman > 0.95, spearman


def _centered_cosine(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_an_unseen_image_borrows_the_unexplained_part_of_its_lookalike_seen_class(share):
    # classes 0, 1 seen; class 2 unseen with the attributes of class 0 up to a small change.
    # No noise, no jitter, attributes' share small against rho: an unseen image's features
    # follow zeta of class 0 when it borrows all of it (share 1, T small), and not otherwise.
    att = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.1, 0.0]])
    labels = torch.tensor([0, 1, 2, 2])
    z = synthesize_features(att, labels, feature_dim=512, noise=0.0, instance_jitter=0.0, unexplained=3.0,
                            seen_classes=torch.tensor([0, 1]), unseen_confusion=share, confusion_temperature=0.01,
                            generator=torch.Generator().manual_seed(0))
    to_lookalike, to_other = _centered_cosine(z[2], z[0]), _centered_cosine(z[2], z[1])
    if share == 1.0:
        assert to_lookalike > 0.9 and to_other < 0.5, (to_lookalike, to_other)
        assert torch.equal(z[2], z[3])  # both images drew class 0 (T small): the same features
    else:
        assert to_lookalike < 0.5 and to_other < 0.5, (to_lookalike, to_other)


def test_a_model_trained_on_the_seen_classes_is_seen_biased():
    # 20 seen, 5 unseen classes, d_z 512, a small CN model, 10 epochs, factor 1.0: without
    # the mechanism almost no unseen image is taken for a seen class (GZSL-U / ZSL-U 0.98
    # on this seed), with SEEN_BIAS many are (0.56), while ZSL-U stays far above 1/5
    ratios = {}
    for on in (False, True):
        spec = replace(TINY_SPEC, num_seen=20, num_unseen=5, attribute_dim=24, trainval=1000, test_seen=200,
                       test_unseen=250, feature_dim=512, **(SEEN_BIAS if on else {}))
        data = make_synthetic(spec, seed=1)
        model, _ = train_model(preset_config("cn", 24, 512, hidden_dims=(64, 64)), data,
                               TrainConfig(epochs=10, batch_size=64, lr=2e-3, progress=False))
        scores = evaluate(model, data, seen_logit_scale=1.0)
        assert scores.zsl_unseen > 0.4, scores
        ratios[on] = scores.gzsl_unseen / scores.zsl_unseen
    assert ratios[False] > 0.9 and ratios[True] < 0.8, ratios


def test_semi_synthetic_keeps_real_attributes_and_splits():
    path = real_att_splits("CUB")
    data = make_semi_synthetic(path, seed=0, feature_dim=16)
    real = read_att_splits(path)
    assert data.source == "semi-synthetic" and data.name == "CUB"
    assert torch.equal(data.attributes, real.attributes)
    assert torch.equal(data.trainval, real.trainval) and torch.equal(data.test_unseen, real.test_unseen)
    assert data.features.shape == (11788, 16)
    names = set((path.parent / "testclasses.txt").read_text().split())
    assert {data.class_names[c] for c in data.unseen_classes.tolist()} == names
    assert data.seen_classes.numel() == 150


def test_semi_synthetic_without_class_list(tmp_path):
    # a folder named after a preset draws the preset's number of unseen classes
    folder = tmp_path / "AWA2"
    folder.mkdir()
    (folder / "att_splits.mat").write_bytes(real_att_splits("AWA2").read_bytes())
    data = make_semi_synthetic(folder / "att_splits.mat", feature_dim=8)
    assert data.unseen_classes.numel() == 10 and "drawn at random" in data.provenance["rule"]
    other = tmp_path / "MINE"
    other.mkdir()
    (other / "att_splits.mat").write_bytes(real_att_splits("AWA2").read_bytes())
    with pytest.raises(DataError, match="cannot tell the unseen classes: put testclasses.txt"):
        make_semi_synthetic(other / "att_splits.mat", feature_dim=8)
    (other / "testclasses.txt").write_text("unicorn\n")
    with pytest.raises(DataError, match="class 'unicorn' is not in att_splits.mat"):
        make_semi_synthetic(other / "att_splits.mat", feature_dim=8)


def test_errors():
    with pytest.raises(ValueError, match="unknown synthetic data set 'FLO'"):
        synthetic_spec("FLO")
    assert synthetic_spec("cub", feature_dim=8).feature_dim == 8
    with pytest.raises(ValueError, match="at least 2 seen and 1 unseen"):
        make_synthetic(replace(TINY_SPEC, num_unseen=0))
    with pytest.raises(ValueError, match="at least one sample per seen class"):
        make_synthetic(replace(TINY_SPEC, trainval=3))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        synthesize_features(torch.rand(4, 3), torch.tensor([0, 4]), generator=g)
    with pytest.raises(ValueError, match="need noise, unexplained, instance_jitter >= 0"):
        synthesize_features(torch.rand(4, 3), torch.tensor([0, 1]), instance_jitter=-1.0, generator=g)
    with pytest.raises(ValueError, match=r"expected attributes \[C, d_a\] and labels \[N\]"):
        synthesize_features(torch.rand(4), torch.tensor([0]), generator=g)
    att, y = torch.rand(4, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="need sparsity_gain > 0"):
        synthesize_features(att, y, sparsity_gain=0.0, generator=g)
    with pytest.raises(ValueError, match=r"seen_confusion and unseen_confusion in \[0, 1\]"):
        synthesize_features(att, y, unseen_confusion=1.5, seen_classes=torch.tensor([0, 1]), generator=g)
    with pytest.raises(ValueError, match="need a finite unexplained_spread >= 0, got -0.1"):
        synthesize_features(att, y, unexplained_spread=-0.1, generator=g)
    with pytest.raises(ValueError, match="need a finite unexplained_spread >= 0, got nan"):
        synthesize_features(att, y, unexplained_spread=float("nan"), generator=g)
    with pytest.raises(ValueError, match="confusion_temperature > 0"):
        synthesize_features(att, y, confusion_temperature=0.0, generator=g)
    with pytest.raises(ValueError, match="needs seen_classes"):
        synthesize_features(att, y, unseen_confusion=0.5, generator=g)
    with pytest.raises(ValueError, match=r"seen_classes must be distinct indices in \[0, 3\]"):
        synthesize_features(att, y, unseen_confusion=0.5, seen_classes=torch.tensor([0, 4]), generator=g)
    with pytest.raises(ValueError, match="at least 2 seen classes"):
        synthesize_features(att, y, seen_confusion=0.5, seen_classes=torch.tensor([0]), generator=g)
    one_seen = synthesize_features(att, y, unseen_confusion=0.5, seen_classes=torch.tensor([0]), feature_dim=8,
                                   generator=g)
    assert torch.isfinite(one_seen).all()
    with pytest.raises(TypeError, match=r"unknown generator parameter\(s\) \['nois'\]"):
        make_semi_synthetic(real_att_splits("CUB"), nois=1.0)


def test_semi_synthetic_uses_the_preset_with_the_real_attributes_jitter():
    # real attributes differ less between classes than synthetic ones: tau is SEMI_SYNTHETIC's,
    # CUB's m_u that of SEMI_SYNTHETIC_BY_DATASET, everything else the preset's, and an
    # explicit knob wins over all
    path = real_att_splits("CUB")
    knobs = make_semi_synthetic(path, seed=0, feature_dim=16).provenance["knobs"]
    assert knobs == {**SYNTHETIC_PRESETS["CUB"].generator_knobs(), **SEMI_SYNTHETIC, "unseen_confusion": 0.35}
    assert SEMI_SYNTHETIC_BY_DATASET["CUB"] == {"unseen_confusion": 0.35}
    assert SYNTHETIC_PRESETS["CUB"].unseen_confusion != 0.35
    assert make_semi_synthetic(path, seed=0, feature_dim=16, unseen_confusion=0.5).provenance["knobs"][
        "unseen_confusion"] == 0.5
    assert knobs["instance_jitter"] == 1.0 != SYNTHETIC_PRESETS["CUB"].instance_jitter
    assert make_semi_synthetic(path, seed=0, feature_dim=16, instance_jitter=2.5).provenance["knobs"][
        "instance_jitter"] == 2.5


# Seen images that resemble an unseen class (unseen_lookalike_fraction q, unseen_lookalike_share w).
# With no noise, no jitter and no unexplained part, an image's features are a deterministic
# function of the attributes it expresses, so which images were picked, and for which unseen
# class, can be read off the features exactly.
_PLAIN = dict(feature_dim=64, noise=0.0, instance_jitter=0.0, unexplained=0.0)


def test_without_unseen_lookalikes_the_features_are_those_of_the_presets_generator():
    att, labels = torch.rand(5, 6), torch.tensor([0, 1, 2, 3, 4] * 20)
    kw = dict(feature_dim=64, seen_classes=torch.tensor([0, 1, 2]), unseen_confusion=0.3, seen_confusion=0.2)
    z = synthesize_features(att, labels, **kw, generator=torch.Generator().manual_seed(0))
    z0 = synthesize_features(att, labels, **kw, unseen_lookalike_fraction=0.0, unseen_lookalike_share=0.9,
                             generator=torch.Generator().manual_seed(0))
    z1 = synthesize_features(att, labels, **kw, unseen_lookalike_fraction=0.5, unseen_lookalike_share=0.9,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z0) and not torch.equal(z, z1)


def test_a_picked_seen_image_expresses_the_mixture_of_its_attributes_with_its_lookalikes():
    # class 0 seen, classes 1 (unseen, nearly class 0's attributes) and 2 (unseen, far):
    # T small, so every picked image resembles class 1; with q = 1 every seen image is picked
    att = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])
    kw = dict(**_PLAIN, seen_classes=torch.tensor([0]), confusion_temperature=0.01, unseen_lookalike_fraction=1.0)
    full = synthesize_features(att, labels, **kw, unseen_lookalike_share=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full[0], full[2]) and torch.equal(full[1], full[2])  # a seen image shows class 1 only
    part = synthesize_features(att, labels, **kw, unseen_lookalike_share=0.25, generator=torch.Generator().manual_seed(0))
    # the same map (A, B are the generator's first draws) on a class whose attributes are the mixture
    mixed = torch.cat([att, 0.75 * att[:1] + 0.25 * att[1:2]])
    expect = synthesize_features(mixed, torch.tensor([3]), **_PLAIN, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(part[0], expect[0], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(part[0], full[0])
    # unseen images never resemble another class: the same features as without the mechanism
    plain = synthesize_features(att, labels, **_PLAIN, generator=torch.Generator().manual_seed(0))
    assert torch.equal(part[2:], plain[2:]) and torch.equal(full[2:], plain[2:])
    # ... even when the look-alikes are nearly uniform (T large): 50 images of class 2 keep their features
    many = torch.tensor([0, 1] + [2] * 50)
    flat = dict(_PLAIN, seen_classes=torch.tensor([0]), confusion_temperature=100.0, unseen_lookalike_share=1.0)
    z = synthesize_features(att, many, **flat, unseen_lookalike_fraction=1.0, generator=torch.Generator().manual_seed(0))
    assert (z[2:] == z[2]).all()
    torch.testing.assert_close(z[2], plain[3], rtol=1e-6, atol=1e-6)


def test_the_fraction_picked_and_the_lookalikes_follow_q_and_the_softmax():
    # class 0 seen; unseen classes 1 and 2 at attribute cosines 0.8 and 0.6 to class 0, T = 0.1:
    # a picked image resembles class 1 with probability 1 / (1 + exp(-2)); q = 0.3 of 6000 images
    att = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.0, 0.8]])
    n, q = 6000, 0.3
    labels = torch.cat([torch.zeros(n, dtype=torch.int64), torch.tensor([1, 2])])
    z = synthesize_features(att, labels, **_PLAIN, seen_classes=torch.tensor([0]), confusion_temperature=0.1,
                            unseen_lookalike_fraction=q, unseen_lookalike_share=1.0,
                            generator=torch.Generator().manual_seed(2))
    as_1 = (z[:n] == z[n]).all(dim=1)
    as_2 = (z[:n] == z[n + 1]).all(dim=1)
    own = synthesize_features(att, torch.tensor([0]), **_PLAIN, generator=torch.Generator().manual_seed(2))[0]
    kept = z[:n][~(as_1 | as_2)]  # the rest show their own class, every one the same
    assert kept.shape[0] > 0 and (kept == kept[0]).all()
    torch.testing.assert_close(kept[0], own, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(own, z[n]) and not torch.allclose(own, z[n + 1])
    picked = float((as_1 | as_2).double().mean())
    assert abs(picked - q) < 4 * (q * (1 - q) / n) ** 0.5, picked
    p1 = 1 / (1 + torch.exp(torch.tensor(-2.0)).item())  # softmax of (0.8, 0.6) / 0.1
    share_1 = float(as_1.sum() / (as_1 | as_2).sum())
    assert abs(share_1 - p1) < 4 * (p1 * (1 - p1) / float((as_1 | as_2).sum())) ** 0.5, (share_1, p1)


def test_unseen_lookalikes_refuse_bad_parameters():
    att, y, g = torch.rand(4, 3), torch.tensor([0, 1, 2, 3]), torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"unseen_lookalike_fraction and unseen_lookalike_share in \[0, 1\], got 1.5"):
        synthesize_features(att, y, unseen_lookalike_fraction=1.5, seen_classes=torch.tensor([0]), generator=g)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 0.5, nan"):
        synthesize_features(att, y, unseen_lookalike_fraction=0.5, unseen_lookalike_share=float("nan"),
                            seen_classes=torch.tensor([0]), generator=g)
    with pytest.raises(ValueError, match="unseen_lookalike_fraction > 0 needs seen_classes"):
        synthesize_features(att, y, unseen_lookalike_fraction=0.5, generator=g)
    with pytest.raises(ValueError, match="needs at least one unseen class"):
        synthesize_features(att, y, unseen_lookalike_fraction=0.5, seen_classes=torch.arange(4), generator=g)
    with pytest.raises(ValueError, match=r"seen_classes must be distinct indices in \[0, 3\], got \[7\]"):
        synthesize_features(att, y, unseen_lookalike_fraction=0.5, seen_classes=torch.tensor([7]), generator=g)
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 3\], got \[0, 0\]"):
        synthesize_features(att, y, unseen_lookalike_fraction=0.5, seen_classes=torch.tensor([0, 0]), generator=g)
