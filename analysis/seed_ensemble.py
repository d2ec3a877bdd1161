"""Many seeds at once: ``S`` independent copies of one model trained as one vectorized model.

A :class:`SeedEnsemble` stacks the parameters and buffers of ``S`` models of the same
architecture (``p[s]`` is member ``s``'s tensor, shape ``[S, *p.shape]``) and evaluates
every member with ``torch.func.vmap`` over ``functional_call``, so a Linear layer becomes
one batched matmul over the members instead of ``S`` small ones:

    logits[s] = model_s(features[s], attributes)          features [S, B, d_z] -> [S, B, K]

Each member keeps its own class statistics (the running averages of its
ClassStandardization layers are slices of the stacked buffers, updated in place under
vmap) and, because Adam is element-wise and the training loss is the sum of the members'
losses, its own optimizer state and trajectory: member ``s`` trained here follows the
run of ``analysis.training.train`` with seed ``s`` (same initial weights, same
permutations), up to the rounding of batched instead of single matmuls.

:func:`train_seeds` is the entry point: build the members with their seeds, train them
together (on CUDA with the whole-epoch CUDA graph of :mod:`analysis.recipe_loop`), and
return them as ordinary separate models.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from analysis.data import ZSLData
from analysis.model import ClassifierConfig, EmbedderConfig
from analysis.normalization import normalize_attributes
from analysis.recipe_loop import fit
from analysis.training import History, TrainConfig, build_model, resolve_device, seen_targets

__all__ = ["SeedEnsemble", "train_seeds"]


class SeedEnsemble(nn.Module):
    """``S`` models of one architecture as stacked tensors (module docstring).

    Args:
        models: the members, all of the same class and parameter shapes; their values are
            copied (the inputs are not modified or aliased).

    Raises:
        ValueError: no models, or members whose parameter or buffer names/shapes differ.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("SeedEnsemble needs at least one model")
        shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
        for i, other in enumerate(shapes[1:], start=1):
            if other != shapes[0] or type(models[i]) is not type(models[0]):
                raise ValueError(f"member {i} ({type(models[i]).__name__}) differs in architecture from member 0 "
                                 f"({type(models[0]).__name__}); a SeedEnsemble stacks identical architectures")
        params, buffers = stack_module_state(models)  # copies: detached, stacked along dim 0
        self.num_members = len(models)
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(params[k]) for k in self._param_names)
        for i, k in enumerate(self._buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[k])
        # the architecture without storage (functional_call swaps the stacked slices in);
        # kept out of the module tree so that .to() and state_dict() never see it
        base = copy.deepcopy(models[0]).to("meta")
        object.__setattr__(self, "base", base.train(models[0].training))

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = dict(zip(self._param_names, self.stacked))
        buffers = {k: getattr(self, f"buffer_{i}") for i, k in enumerate(self._buffer_names)}
        return params, buffers

    def train(self, mode: bool = True) -> SeedEnsemble:
        super().train(mode)
        self.base.train(mode)
        return self

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        """Logits ``[S, B, K]`` of every member: ``features`` [S, B, d_z], ``attributes`` [K, d_a]."""
        if features.ndim != 3 or features.shape[0] != self.num_members:
            raise ValueError(f"expected features of shape [S={self.num_members}, B, d_z] (one batch per member), "
                             f"got {tuple(features.shape)}")
        params, buffers = self._state()

        def member(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.base, (p, b), (x, attributes))

        return vmap(member, in_dims=(0, 0, 0))(params, buffers, features)

    def member_losses(self, features: Tensor, targets: Tensor, attributes: Tensor) -> Tensor:
        """Each member's mean cross-entropy ``[S]``: ``features`` [S, B, d_z], ``targets`` [S, B]."""
        params, buffers = self._state()

        def member(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return nn.functional.cross_entropy(functional_call(self.base, (p, b), (x, attributes)), y)

        return vmap(member, in_dims=(0, 0, 0, 0))(params, buffers, features, targets)

    @torch.no_grad()
    def members(self) -> list[nn.Module]:
        """The members as separate models (copies on the ensemble's device and mode)."""
        params, buffers = self._state()
        out = []
        for s in range(self.num_members):
            model = copy.deepcopy(self.base).to_empty(device=self.stacked[0].device)
            model.load_state_dict({**{k: v[s] for k, v in params.items()}, **{k: v[s] for k, v in buffers.items()}})
            out.append(model.train(self.training))
        return out


def train_seeds(
    config: EmbedderConfig | ClassifierConfig,
    data: ZSLData,
    train_config: TrainConfig = TrainConfig(),
    seeds: Sequence[int] = (1, 2, 3),
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[list[nn.Module], list[History]]:
    """Train one model per seed, all at once, with the recipe of ``train_config``.

    Member ``s`` gets what ``train_model(config, data, replace(train_config, seed=s))``
    would: initial weights from ``build_model(config, s)`` and the per-epoch permutations
    of a generator seeded with ``s`` (``train_config.seed`` itself is not used).

    Args:
        config: the architecture of every member.
        data: the data set (``data.features`` must have ``dtype``).
        train_config: the recipe (device, fast path, epochs, ...).
        seeds: one seed per member, distinct.
        dtype: parameter dtype of the members (float64 for exact comparisons).

    Returns:
        ``(models, histories)``: the trained members as separate models and one
        :class:`History` each (its ``loss`` is the member's own per-epoch mean loss; the
        timings are those of the shared run).

    Raises:
        ValueError: no seeds, repeated seeds, or features of another dtype.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, at least one, got {seeds}")
    if data.features.dtype != dtype:
        raise ValueError(f"data.features has dtype {data.features.dtype} but dtype={dtype}; "
                         f"convert the features or pass dtype={data.features.dtype}")
    device = resolve_device(train_config.device)
    data = data.to(device)
    ensemble = SeedEnsemble([build_model(config, s).to(dtype) for s in seeds]).to(device).train()
    attributes = normalize_attributes(data.attributes, train_config.attribute_norm)[data.seen_classes]
    features = data.features[data.trainval]  # [n, d_z]
    targets = seen_targets(data)  # [n]
    n = features.shape[0]
    shuffles = [torch.Generator().manual_seed(s) for s in seeds]

    def step_loss(rows: Tensor) -> Tensor:  # rows [S, B]
        return ensemble.member_losses(features[rows], targets[rows], attributes)

    def draw_order() -> Tensor:
        return torch.stack([torch.randperm(n, generator=g) for g in shuffles])  # [S, n]

    log = fit(ensemble.parameters(), step_loss, draw_order, n, train_config, device)
    histories = [History(loss=[float(x[s]) for x in log.loss], epoch_seconds=log.epoch_seconds,
                         seconds=log.seconds, device=str(device), steps=log.steps, path=log.path)
                 for s in range(len(seeds))]
    return ensemble.members(), histories
