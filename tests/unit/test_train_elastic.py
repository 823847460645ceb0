"""Elastic training without Ray (issue #16): the [min, max] config, the Ray Train settings it maps
to, the data position re-split over a new world size, and what may resume at another size."""

from __future__ import annotations

import dataclasses

import pytest

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.train import check_config, elastic, universal
from rayloom.train import checkpoints as ckpts
from rayloom.train.ds_config import build_batch_geometry

MICRO, GLOBAL = 2, 12  # 12 rows a step at 1, 2 or 3 workers (accumulation 6, 3, 2)


def _cfg(*extra):
    return compose("train", ["train.num_workers=[1,3]", f"train.micro_batch_size={MICRO}",
                             f"train.global_batch_size={GLOBAL}", *extra])


def test_num_workers_takes_an_int_or_a_range():
    cfg = _cfg()
    assert (cfg.train.min_workers, cfg.train.num_workers, cfg.train.elastic) == (1, 3, True)
    assert elastic.scaling_kwargs(cfg.train) == {"num_workers": (1, 3), "elastic_resize_monitor_interval_s": 60.0}
    assert elastic.max_failures(cfg.train) == elastic.ELASTIC_MAX_FAILURES  # >0 by default when elastic
    fixed = compose("train", ["train.num_workers=2"])
    assert (fixed.train.num_workers, fixed.train.elastic, fixed.train.smallest_workers) == (2, False, 2)
    assert elastic.scaling_kwargs(fixed.train) == {"num_workers": 2}
    assert elastic.max_failures(fixed.train) == 0
    # A fixed config changed in code stays fixed (min_workers 0 means "same as num_workers").
    assert not dataclasses.replace(fixed.train, num_workers=4).elastic
    assert compose("train", ["train=gpu_elastic"]).train.elastic


@pytest.mark.parametrize("overrides, match", [
    (["train.num_workers=[1,2]"], "needs a fixed global batch"),
    (["train.num_workers=[1,3]", "train.micro_batch_size=2", "train.global_batch_size=8"], "every worker count"),
    (["train.num_workers=[3,1]"], "must not exceed"),
    (["train.num_workers=[1,2,3]"], "int or a \\[min, max\\]"),
    (["train.num_workers=two"], "int or a \\[min, max\\]"),
])
def test_bad_worker_ranges_name_the_key(overrides, match):
    with pytest.raises(UserError, match=match):
        compose("train", overrides)


def test_elastic_refuses_what_universal_checkpoints_cannot_carry():
    with pytest.raises(UserError, match="NVMe"):
        check_config(_cfg("deepspeed=zero3_nvme", "deepspeed.nvme_path=/tmp/x"))
    with pytest.raises(UserError, match="PEFT"):
        check_config(_cfg("peft=lora"))
    check_config(_cfg("deepspeed=zero3_offload"))


def test_the_global_batch_stays_fixed_at_every_size():
    cfg = _cfg()
    for workers, accum in ((1, 6), (2, 3), (3, 2)):
        geometry = build_batch_geometry(cfg.train, cfg.deepspeed, workers)
        assert (geometry.global_batch_size, geometry.grad_accum) == (GLOBAL, accum)


class _Shard:
    """A stand-in for a Ray Data shard: one ordered stream of row numbers (stride mode)."""

    def __init__(self, rows: int):
        self.rows = rows

    def iter_torch_batches(self, batch_size, drop_last, prefetch_batches):
        import torch

        for start in range(0, self.rows - batch_size + 1 if drop_last else self.rows, batch_size):
            yield {"input_ids": torch.arange(start, min(start + batch_size, self.rows))}


def _train_steps(rows: int, world: int, steps: int, saved: ckpts.TrainerState | None):
    """Row numbers each rank trains on for `steps` steps (train_fn's own step iterator, stride
    mode), starting fresh or from `saved`; and the state a checkpoint after them would hold."""
    from rayloom.train.train_fn import _iter_steps

    cfg = _cfg()
    geometry = build_batch_geometry(cfg.train, cfg.deepspeed, world)
    skip = elastic.rows_to_skip(saved, "stride", world) if saved else 0
    seen, position = [], 0
    for rank in range(world):
        iterator = _iter_steps(_Shard(rows), ("input_ids",), geometry, 0, skip, world, rank, 0)
        for _ in range(steps):
            _, position, micro_batches = next(iterator)
            seen += [int(r) for mb in micro_batches for r in mb["input_ids"]]
    return seen, ckpts.TrainerState(step=steps, rows_in_epoch=position, world_size=world, data_mode="stride")


@pytest.mark.parametrize("before, after", [(2, 1), (2, 3), (3, 2), (1, 2)])
def test_the_data_position_re_splits_over_a_new_world_size_exactly(before, after):
    rows = 10 * GLOBAL + 5  # 10 whole steps per epoch; the last 5 rows are dropped at any size
    first, saved = _train_steps(rows, before, 4, None)
    second, _ = _train_steps(rows, after, 6, saved)
    assert saved.rows_in_epoch == 4 * GLOBAL  # a global sample offset, independent of the size
    assert sorted(first + second) == list(range(10 * GLOBAL))  # none skipped, none twice
    # The pure rule the docs state gives the same rows.
    expected = [r for rank in range(after) for r in elastic.rank_rows(4 * GLOBAL, rows, MICRO, GLOBAL, after, rank)]
    assert sorted(second) == sorted(expected)


def test_a_split_mode_offset_is_converted_to_a_global_one():
    saved = ckpts.TrainerState(rows_in_epoch=24, world_size=2, data_mode="split")
    assert elastic.global_offset(saved) == 48
    assert elastic.rows_to_skip(saved, "stride", 3) == 48
    assert elastic.rows_to_skip(saved, "split", 2) == 24


def test_what_may_resume_at_another_size():
    state = ckpts.TrainerState(world_size=2, zero_stage=3)
    assert universal.needs_universal(state, 1) and not universal.needs_universal(state, 2)
    assert not universal.needs_universal(dataclasses.replace(state, zero_stage=0), 1)  # whole state per rank
    universal.check_resizable(state, 1, "ckpt", uses_nvme=False)
    with pytest.raises(UserError, match="NVMe"):
        universal.check_resizable(state, 1, "ckpt", uses_nvme=True)
    with pytest.raises(UserError, match="tensor"):
        universal.check_resizable(dataclasses.replace(state, tensor_parallel_size=2), 1, "ckpt", uses_nvme=False)
    with pytest.raises(UserError, match="PEFT"):
        universal.check_resizable(dataclasses.replace(state, peft_method="lora"), 1, "ckpt", uses_nvme=False)


def test_cached_universal_forms_of_deleted_checkpoints_are_pruned(tmp_path):
    from rayloom import storage

    run = tmp_path / "run"
    kept = run / ckpts.checkpoint_name(4, "abc123")
    kept.mkdir(parents=True)
    for step in (2, 4):
        src = tmp_path / f"u{step}"
        src.mkdir()
        (src / "x").write_text("x")
        storage.commit_dir(src, universal.universal_uri(str(run / ckpts.checkpoint_name(step, "abc123"))),
                           kind=universal.KIND)
    universal.prune_orphans(str(run))
    assert storage.is_committed(universal.universal_uri(str(kept)))
    assert not storage.exists(universal.universal_uri(str(run / ckpts.checkpoint_name(2, "abc123"))))
    assert [s for s, _ in ckpts.list_checkpoints(str(run))] == [4]


def test_rank_zero_votes_for_a_drain_check_every_n_steps_at_most_once_per_interval():
    """The per-step all-reduce carries rank 0's vote; every rank then calls the collective check."""
    now = [100.0]
    watch = elastic.PreemptionWatch(every=2, interval_s=5.0, rank=0, clock=lambda: now[0])
    assert (watch.due(1), watch.due(2)) == (0.0, 1.0)  # never checked: due at the next multiple of 2
    watch.last_check = now[0]  # what poll() records
    now[0] += 4.9
    assert watch.due(4) == 0.0
    now[0] += 0.1
    assert (watch.due(4), watch.due(5)) == (1.0, 0.0)
    assert elastic.PreemptionWatch(1, 0.0, rank=1).due(1) == 0.0  # only rank 0 votes
    assert elastic.PreemptionWatch(0, 0.0, rank=0).due(4) == 0.0  # every=0: never ask
    assert elastic.PreemptionWatch(1, 0.0, rank=0).due(7) == 1.0  # interval 0: at every step
