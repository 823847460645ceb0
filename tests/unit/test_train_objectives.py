"""Objectives on the tiny model (plain torch, no Ray): packing, the SFT mask, loss normalisation,
the objective registry and how workers get their objective, the learning-rate schedule and the
FLOPs arithmetic behind MFU."""

from __future__ import annotations

import ast
import math
import os
import pickle
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT
from helpers.train_fixtures import IGNORE_INDEX, pack_documents, sft_rows

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.models import load_model
from rayloom.train.metrics import flops_per_token, measure_peak_flops, mfu
from rayloom.train.objectives import build_objective, lm_inputs, objective_builder
from rayloom.train.optim import build_lr_scheduler
from rayloom.train.train_fn import TrainJob


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    m = load_model(tiny_model_dir)
    m.eval()
    return m


@pytest.fixture(scope="module")
def objective():
    return build_objective(compose("train", ["model=tiny-2l"]))


def _batch(rows: list[dict]) -> dict:
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def test_packed_documents_do_not_attend_to_each_other(model):
    doc_a = list(range(10, 30))
    doc_b = list(range(40, 52))
    packed = _batch(pack_documents([(doc_a, doc_a), (doc_b, doc_b)], seq_len=40, pad_id=0))
    inputs = lm_inputs(packed)
    assert "attention_mask" not in inputs  # right padding: document boundaries come from position_ids
    with torch.no_grad():
        inputs.pop("labels")
        packed_logits = model(**inputs).logits
        alone = model(input_ids=torch.tensor([doc_b]), use_cache=False).logits
        # Without the packing-aware mask (what the attention mask would force) doc_b sees doc_a.
        leaky = model(**inputs, attention_mask=(inputs["input_ids"] != 0).long()).logits
    torch.testing.assert_close(packed_logits[0, 20:32], alone[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(leaky[0, 20:32], alone[0], atol=1e-2)


def test_left_padding_keeps_the_attention_mask():
    row = {"input_ids": [0, 0, 5, 6], "labels": [-100, -100, 5, 6], "position_ids": [0, 0, 0, 1],
           "attention_mask": [0, 0, 1, 1]}
    assert "attention_mask" in lm_inputs(_batch([row]))


def test_sft_targets_are_assistant_tokens_only(tiny_model_dir, objective):
    from transformers import AutoTokenizer

    rows = sft_rows(tiny_model_dir, seq_len=64, num=4)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    batch = _batch(rows)
    for row in rows:
        targets = [t for t in row["labels"][1:] if t != IGNORE_INDEX]
        text = tok.decode(targets)
        assert "=" in text and "What is" not in text and "<|user|>" not in text
    assert int(objective.count_targets(batch)) == sum(
        sum(1 for t in r["labels"][1:] if t != IGNORE_INDEX) for r in rows)


def test_summed_loss_over_micro_batches_equals_the_global_token_mean(model, tiny_model_dir, objective):
    rows = sft_rows(tiny_model_dir, seq_len=64, num=6)
    full = _batch(rows)
    with torch.no_grad():
        mean_loss = model(**{k: v for k, v in lm_inputs(full).items()}).loss
        parts = [_batch(rows[:1]), _batch(rows[1:4]), _batch(rows[4:])]
        total = sum(objective.loss_sum(model, p) for p in parts)
        count = sum(objective.count_targets(p) for p in parts)
    torch.testing.assert_close(total / count, mean_loss, atol=1e-5, rtol=1e-5)


def test_an_objective_no_package_registered_is_a_user_error_naming_the_registered_ones():
    with pytest.raises(UserError, match=r"objective.name='nope' has no registered builder.*clm, .*sft"):
        objective_builder("nope")


def test_rayloom_train_never_imports_rayloom_align():
    offenders = []
    for path in (REPO_ROOT / "platform" / "rayloom" / "train").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("rayloom.align")]
    assert offenders == []


def test_a_worker_gets_the_objective_the_driver_looked_up(tmp_path):
    """The builder travels inside TrainJob by reference: a fresh process that never imported
    rayloom.align (a Ray Train worker) imports it while unpickling and builds dpo."""
    from rayloom.align import preference_objective

    cfg = compose("train", ["model=tiny-2l", "objective=dpo"])
    job_file = tmp_path / "job.pkl"
    job_file.write_bytes(pickle.dumps(TrainJob(cfg=cfg, run_dir=str(tmp_path), build_objective=preference_objective)))
    child = (
        "import pickle, sys\n"
        "assert 'rayloom.align' not in sys.modules\n"
        f"job = pickle.loads(open({str(job_file)!r}, 'rb').read())\n"
        "objective = job.build_objective(job.cfg)\n"
        "print(objective.name, objective.data_kind, job.build_objective.__module__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "platform")}
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["dpo", "preference", "rayloom.align.preference"]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = compose("train", ["train.lr=1.0", "train.warmup_steps=4", "train.max_steps=20", "train.min_lr_ratio=0.1"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    scheduler = build_lr_scheduler(optimizer, cfg.train)
    lrs = []
    for _ in range(20):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    no_warmup = build_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                                    compose("train", ["train.lr=1.0", "train.warmup_steps=0"]).train)
    assert no_warmup.get_last_lr()[0] == 1.0


def test_flops_per_token_counts_frozen_weights_without_their_gradient():
    full = flops_per_token(num_params=1000, num_trainable=1000, num_embedding=100, num_layers=2, hidden_size=8,
                           seq_len=16)
    assert full == 6 * 900 + 12 * 2 * 8 * 16
    lora = flops_per_token(num_params=1000, num_trainable=10, num_embedding=100, num_layers=2, hidden_size=8,
                           seq_len=16)
    assert lora == 4 * 900 + 2 * 10 + 12 * 2 * 8 * 16
    assert mfu(full, positions_per_s_per_worker=1000, peak_flops_per_worker=full * 2000) == 0.5


def test_measured_peak_is_a_plausible_flop_rate():
    peak = measure_peak_flops("float32", size=256, repeats=2)
    assert 1e8 < peak < 1e15 and not math.isnan(peak)


def test_the_train_summary_shows_each_objectives_own_metrics_first_to_last():
    import rayloom.align  # noqa: F401  (registers dpo and grpo)
    from rayloom.config import compose
    from rayloom.train.driver import TrainResult, summarize
    from rayloom.train.objectives import objective_builder

    step = {"loss": 0.69, "step": 1, "tokens_per_s": 100.0, "mfu": 0.01}
    for name, metric, first, last in (("dpo", "pref_accuracy", 0.5, 0.875), ("grpo", "reward_mean", 0.0, 0.25)):
        overrides = ["objective=" + name] + (["experiment=tiny_grpo"] if name == "grpo" else [])
        objective = objective_builder(name)(compose("train", overrides))
        assert metric in objective.summary_metrics
        history = [{**step, metric: first}, {**step, "step": 2}, {**step, "step": 3, "loss": 0.5, metric: last}]
        text = summarize(TrainResult(run_name="r", run_dir="d", checkpoint=None, step=3, history=history,
                                     objective=name, summary_metrics=objective.summary_metrics))
        assert f"{name}: {metric} {first:.3g} -> {last:.3g}" in text, text
