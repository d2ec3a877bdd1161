"""Many random initializations of the attribute embedder at once (vectorized Monte Carlo).

The variance claims V2-V4 are statements about the law of the prototypes over random
initializations.  Instead of building one ``nn.Module`` per seed, this module draws the
parameters of ``S`` embedders as stacked tensors (``W`` [S, out, in], ``b`` [S, out]) with
exactly the laws of :func:`analysis.init.init_linear_` (same :func:`linear_init_bounds`)
and runs them with batched matmuls:

    h_0 = a                                   [K, d_a], shared by every init
    h_l = S?(relu(S?(h_{l-1} W_l^T + b_l)))   [S, K, d_l]   (S where the config puts CN)
    p   = h_L V^T + b_V                       [S, K, d_z]   (pre-activation prototypes)

Class standardization runs in training mode with the statistics of the classes passed
in and updates nothing (it is :func:`analysis.class_standardization.class_standardize`,
batched over the leading axis).  The output ReLU is not applied: the claims are stated for
the pre-activation prototypes (module :mod:`variance.prototype_variance`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.class_standardization import class_standardize, class_statistics
from analysis.init import linear_init_bounds
from analysis.model import EmbedderConfig

__all__ = ["BatchedLinear", "EmbedderDraw", "EmbedderPass", "batched_embedder_forward", "draw_embedder", "iter_draws"]


@dataclass(frozen=True)
class BatchedLinear:
    """Stacked parameters of one linear layer: ``weight`` [S, out, in], ``bias`` [S, out] or None."""

    weight: Tensor
    bias: Tensor | None
    scheme: str


@dataclass(frozen=True)
class EmbedderDraw:
    """The parameters of ``num_inits`` embedders of ``config``: hidden layers, then V."""

    config: EmbedderConfig
    layers: tuple[BatchedLinear, ...]

    @property
    def num_inits(self) -> int:
        return self.layers[0].weight.shape[0]


_STREAMS = 2  # parallel random streams per draw (fixed, so results do not depend on the machine)


def _fill_uniform(tensors: list[tuple[Tensor, float]], generator: torch.Generator | None) -> None:
    """Fill each ``(tensor, bound)`` with U(-bound, bound), split over ``_STREAMS`` streams.

    torch's CPU generator is sequential, and drawing is as costly as the forward pass, so
    the draw is split along the init axis into ``_STREAMS`` parts, each filled from its own
    generator (seeded from ``generator``) in its own thread: the same law, about twice as
    fast on two cores, and deterministic for a given ``generator``.
    """
    seeds = torch.randint(0, 2**62, (_STREAMS,), generator=generator).tolist()
    streams = [torch.Generator().manual_seed(seed) for seed in seeds]

    def fill(i: int) -> None:
        for t, bound in tensors:
            parts = t.chunk(_STREAMS)  # along the init axis; fewer parts when S < _STREAMS
            if i < len(parts):
                parts[i].uniform_(-bound, bound, generator=streams[i])

    # a pool per draw, shut down on return: no thread outlives the call (starting two
    # threads costs well under a millisecond, against tens of ms for a draw)
    with ThreadPoolExecutor(_STREAMS, thread_name_prefix="variance-draw") as pool:
        list(pool.map(fill, range(_STREAMS)))


def draw_embedder(
    config: EmbedderConfig, num_inits: int, *, dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None, out: EmbedderDraw | None = None,
) -> EmbedderDraw:
    """Draw the parameters of ``num_inits`` independent embedders of ``config``.

    ``out``, a previous draw of the same config and size, is overwritten in place and
    returned (re-using its memory: drawing into fresh memory costs about twice as much).

    Raises:
        ValueError: ``num_inits < 1``, a normalization other than CN, or ``out`` of another
            config or size.
    """
    if num_inits < 1:
        raise ValueError(f"num_inits must be at least 1, got {num_inits}")
    if config.normalization != "cn":
        raise ValueError(
            f"the vectorized embedder implements class standardization only, got normalization="
            f"{config.normalization!r}; profile other normalizations with "
            f"variance.profile_at_init(build, attributes, seeds=...)"
        )
    widths = (config.attribute_dim, *config.hidden_dims, config.feature_dim)
    schemes = [config.hidden_init] * len(config.hidden_dims) + [config.final_init]
    if out is None:
        out = EmbedderDraw(config, tuple(
            BatchedLinear(torch.empty(num_inits, fan_out, fan_in, dtype=dtype),
                          torch.empty(num_inits, fan_out, dtype=dtype) if config.bias else None, scheme)
            for fan_in, fan_out, scheme in zip(widths[:-1], widths[1:], schemes)
        ))
    elif out.config != config or out.num_inits != num_inits:
        raise ValueError(f"out holds {out.num_inits} draws of another config; pass out=None")
    fills = []
    for layer, fan_in, fan_out in zip(out.layers, widths[:-1], widths[1:]):
        bound, bias_bound = linear_init_bounds(layer.scheme, fan_in, fan_out)
        fills.append((layer.weight, bound))
        if layer.bias is not None:
            fills.append((layer.bias, bias_bound))
    _fill_uniform(fills, generator)
    return out


def iter_draws(
    config: EmbedderConfig, num_inits: int, *, chunk: int = 32, dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Iterator[EmbedderDraw]:
    """``num_inits`` initializations in chunks of at most ``chunk`` (bounded memory).

    The chunks share one buffer: a yielded draw is valid until the next one is drawn.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    done, buffer = 0, None
    while done < num_inits:
        size = min(chunk, num_inits - done)
        if buffer is not None and buffer.num_inits != size:
            buffer = None
        buffer = draw_embedder(config, size, dtype=dtype, generator=generator, out=buffer)
        yield buffer
        done += size


def _linear(h: Tensor, layer: BatchedLinear) -> Tensor:
    """``h W^T + b`` per init: h [S, K, in], or [K, in] shared by all inits -> [S, K, out]."""
    s, fan_out, fan_in = layer.weight.shape
    if h.ndim == 2:  # one GEMM for every init at once: [S*out, in] @ [in, K]
        out = (layer.weight.reshape(s * fan_out, fan_in) @ h.T).view(s, fan_out, -1).transpose(1, 2)
        return out if layer.bias is None else out + layer.bias[:, None, :]
    if layer.bias is None:
        return torch.bmm(h, layer.weight.transpose(1, 2))
    return torch.baddbmm(layer.bias[:, None, :], h, layer.weight.transpose(1, 2))  # bias fused


@dataclass(frozen=True)
class EmbedderPass:
    """What one batched forward pass returns (``S`` inits, ``K`` classes)."""

    h_last: Tensor  # [S, K, d_L] input of V (the attributes, broadcast, if linear)
    prototypes: Tensor  # [S, K, d_z] pre-activation prototypes h_last V^T + b_V
    # [S, 1, d_L] class variance of the input of the standardization that directly
    # precedes V, or None when V's input is not standardized
    final_standardization_input_var: Tensor | None


def batched_embedder_forward(draw: EmbedderDraw, attributes: Tensor) -> EmbedderPass:
    """Run every embedder of ``draw`` on ``attributes`` [K, d_a] (module docstring)."""
    config = draw.config
    if attributes.ndim != 2 or attributes.shape[1] != config.attribute_dim:
        raise ValueError(
            f"expected attributes of shape [K, {config.attribute_dim}], got {tuple(attributes.shape)}"
        )
    dtype = draw.layers[0].weight.dtype
    h = attributes.to(dtype)  # [K, d_a], shared by every init until the first layer
    cn = config.cn_layer_indices

    last_var: Tensor | None = None

    def standardize(x: Tensor) -> Tensor:
        nonlocal last_var
        mean, last_var = class_statistics(x, config.standardization_mode)
        return class_standardize(x, mean, last_var, mode=config.standardization_mode)

    for i, layer in enumerate(draw.layers[:-1]):
        h = _linear(h, layer)
        if i in cn and config.cn_placement in ("both", "pre"):
            h = standardize(h)
        h = h.relu_() if h.ndim == 3 else h.relu()
        last_var = None  # a ReLU now sits between any earlier standardization and V
        if i in cn and config.cn_placement in ("both", "post"):
            h = standardize(h)
    p = _linear(h, draw.layers[-1])
    return EmbedderPass(h.expand(draw.num_inits, *h.shape) if h.ndim == 2 else h, p, last_var)
