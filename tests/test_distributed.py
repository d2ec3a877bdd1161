"""Sharded probes (landscape/distributed.py): 2 processes on the CPU (gloo) against one.

The sharded objective must give, on every rank and bitwise the same on all of them, the
single-process values of every probe on the same model and data: loss, gradient (and its
per-layer norms), a Hessian-vector product, the top eigenvalues (Lanczos, same start),
Hutchinson and Hutch++ (same probes) and the SLQ density (same probes), to float64
round-off in float64 and to 1e-5 relative in float32; also when the samples do not divide
evenly between the processes and when each process splits its shard into several batches.
A process that stops answering must make the others fail within the timeout, not hang.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.multiprocessing as mp

from landscape.distributed import ShardedObjective, distributed_session
from landscape.objective import zsl_batches
from tests.distributed_cases import CASES, as_float, free_port, hanging_worker, sharded_worker, single_process, tiny_data

WORLD_SIZE = 2
# float64: round-off of sums taken in another order (observed ~1e-15 relative); float32: the 1e-5
RTOL = {"float64": 1e-11, "float32": 1e-5}
SCALARS = ("loss", "hutchinson", "hutchpp")
VECTORS = ("gradient", "autograd_gradient", "hvp", "top_eigenvalues")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Every case, run once by 2 gloo processes: ``[rank 0 results, rank 1 results]``."""
    out = tmp_path_factory.mktemp("sharded")
    mp.spawn(sharded_worker, args=(WORLD_SIZE, free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def _close(sharded_value, single_value, rtol: float, scale: float | None = None) -> None:
    got, want = as_float(sharded_value), as_float(single_value)
    atol = 0.0 if scale is None else rtol * scale  # relative to the spectrum's scale, for values near 0
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sharded_probes_equal_the_single_process_run(sharded, case):
    name, dtype, samples, _ = case
    single, ranks = single_process(case), [r[name] for r in sharded]
    rtol = RTOL[dtype]
    assert sum(ranks[0]["shard_sizes"]) == samples
    for key in SCALARS:
        _close(ranks[0][key], single[key], rtol)
    for key in VECTORS:  # entries at round-off level of the largest are compared at that level
        _close(ranks[0][key], single[key], rtol, float(single[key].abs().max()))
    scale = float(single["top_eigenvalues"].abs().max())
    _close(ranks[0]["density_nodes"], single["density_nodes"], rtol, scale)
    _close(ranks[0]["density_weights"], single["density_weights"], rtol, 1.0)
    for group, norm in single["gradient_norms"].items():
        _close(ranks[0]["gradient_norms"][group], norm, rtol)
    assert ranks[0]["lanczos_matvecs"] == single["lanczos_matvecs"]  # the same iterations


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_rank_holds_bitwise_the_same_result(sharded, case):
    """An all-reduce gives every rank the same bytes, so the Krylov iterations agree exactly."""
    first, second = (r[case[0]] for r in sharded)
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key
        else:
            assert value == second[key], key


def test_an_uneven_split_gives_shards_that_differ_by_one(sharded):
    assert sharded[0]["float64-uneven"]["shard_sizes"] == [120, 119]
    assert sharded[0]["float64-even"]["shard_sizes"] == [120, 120]


def test_a_failed_setup_on_one_rank_stops_every_rank_with_one_message(sharded):
    rank0, rank1 = sharded[0]["agree"], sharded[1]["agree"]
    assert rank0["message"].startswith("rank(s) [1] of 2 failed before any product") and not rank0["quiet"]
    assert rank1["message"] == "bad input on rank 1" and "ValueError" in rank1["cause"] and not rank1["quiet"]
    assert rank0["status"] == rank1["status"] == 2


def test_no_process_leaves_the_group_while_rank_0_is_still_inside_the_block(sharded):
    """The session ends with one more all-reduce: rank 1 (done at once) waits for rank 0 (1 s
    of "writing"), so no gloo group is torn down under a peer still using it."""
    assert sharded[1]["left_the_group"] >= sharded[0]["finished_writing"]
    assert sharded[0]["left_the_group"] >= sharded[0]["finished_writing"]


def test_a_silent_rank_makes_the_others_fail_within_the_timeout(tmp_path):
    timeout = 2.0
    start = time.perf_counter()
    mp.spawn(hanging_worker, args=(WORLD_SIZE, free_port(), str(tmp_path), timeout), nprocs=WORLD_SIZE, join=True)
    outcome = torch.load(tmp_path / "rank0.pt")
    assert outcome["error"] is not None, "rank 0 finished although rank 1 never answered"
    assert outcome["error"].startswith("rank 0 of 2: the all-reduce of a probe's share failed: another process "
                                       "exited or did not answer within the process group's timeout")
    assert timeout - 0.5 <= outcome["seconds"] <= timeout + 10
    assert time.perf_counter() - start < 60


# -- single-process checks: no process group needed ----------------------------------------
def test_rank_strided_shards_partition_the_split():
    data = tiny_data(239)
    shards = [zsl_batches(data, shard=(r, 3))[0] for r in range(3)]
    assert [s.size for s in shards] == [80, 80, 79]
    together = torch.cat([s.features for s in shards])
    assert torch.equal(together.sort(dim=0).values, data.features[data.trainval].sort(dim=0).values)
    assert torch.equal(shards[1].features[0], data.features[data.trainval[1]])  # rank r holds rows r, r + W, ...


@pytest.mark.parametrize(("shard", "message"), [
    ((0, 240), None),
    ((0, 241), "world size 241 exceeds the 240 samples of split 'trainval': some process would hold no sample"),
    ((2, 2), r"shard=\(rank=2, world_size=2\) needs 0 <= rank < world_size"),
    (("a", 2), "shard must be a pair"),
])
def test_more_processes_than_samples_is_refused(shard, message):
    data = tiny_data(240)
    if message is None:
        assert zsl_batches(data, shard=shard)[0].size == 1
        return
    with pytest.raises(ValueError, match=message):
        zsl_batches(data, shard=shard)


def test_the_test_seen_split_is_an_objective_of_the_seen_classes():
    data = tiny_data(240)
    batch = zsl_batches(data, split="test_seen")[0]
    assert batch.size == data.test_seen.numel() and int(batch.targets.max()) < batch.attributes.shape[0]
    with pytest.raises(ValueError, match="unknown split 'test_unseen'; choose one of trainval, test_seen"):
        zsl_batches(data, split="test_unseen")


def test_a_sharded_objective_needs_a_process_group():
    from tests.distributed_cases import tiny_model

    with pytest.raises(ValueError, match="needs an initialized torch.distributed process group"):
        ShardedObjective(tiny_model(torch.float64))


def test_without_torchrun_the_session_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed_session("cpu", timeout=5) as session:
        assert (session.rank, session.world_size, session.sharded, session.is_main) == (0, 1, False, True)
        with pytest.raises(ValueError, match="mine"):
            session.agree(ValueError("mine"))  # a single process re-raises its own error
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(("timeout", "environment", "message"), [
    (0, {}, "--timeout must be a positive number of seconds, got 0"),
    (float("nan"), {}, "--timeout must be a positive number of seconds"),
    (5, {"WORLD_SIZE": "two"}, "environment variable WORLD_SIZE='two' is not an integer"),
])
def test_bad_session_settings_are_refused(timeout, environment, message, monkeypatch):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        with distributed_session("cpu", timeout=timeout):
            pass

