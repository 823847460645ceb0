"""Preference losses and log-probs on the tiny model (plain torch, no Ray): DPO is log(2) when the
policy is its reference, each loss prefers the chosen side, the masks score responses only, the
peft reference equals the base model, the config checks name the key, and the objectives reach
rayloom.train through its registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers.align_fixtures import demo_pairs

from rayloom.align import preference_objective, safety_sft_objective
from rayloom.align.losses import SequenceLogps, dpo_losses, log1mexp, orpo_losses, sequence_logps, token_kl
from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.models import load_model
from rayloom.train.objectives import build_objective, objective_builder


@pytest.fixture(scope="module")
def pairs(tiny_model_dir):
    return demo_pairs(tiny_model_dir, 8, seq_len=48)


def _batch(rows: list[dict]) -> dict:
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def _cfg(*overrides: str):
    return compose("train", ["model=tiny-2l", *overrides])


def _logps(n: int, values: list[float], tokens: int = 3) -> SequenceLogps:
    return SequenceLogps(torch.tensor(values), torch.full((n,), tokens), torch.ones(n, 4, dtype=torch.bool))


def test_sequence_logps_score_only_labelled_tokens():
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, -100, 3, 4, -100, -100], [-100, 5, 6, 7, 8, -100]])
    out = sequence_logps(logits, labels)
    full = logits.log_softmax(-1)
    expected0 = full[0, 1, 3] + full[0, 2, 4]  # position t predicts label t+1
    expected1 = sum(full[1, t - 1, labels[1, t]] for t in range(1, 5))
    torch.testing.assert_close(out.logps, torch.stack([expected0, expected1]))
    assert out.num_tokens.tolist() == [2, 4]


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust"])
def test_dpo_is_log2_when_policy_equals_reference(loss_type):
    chosen, rejected = _logps(3, [-5.0, -2.0, -7.0]), _logps(3, [-4.0, -9.0, -1.0])
    out = dpo_losses(loss_type, 0.1, 0.1, chosen, rejected, chosen.logps, rejected.logps)
    torch.testing.assert_close(out.losses, torch.full((3,), math.log(2)))
    assert torch.all(out.chosen_rewards == 0) and torch.all(out.rejected_rewards == 0)


def test_losses_fall_as_the_chosen_side_gains():
    ref_c, ref_r = torch.tensor([-5.0]), torch.tensor([-5.0])
    for loss_type in ("sigmoid", "hinge", "robust", "ipo"):
        values = [dpo_losses(loss_type, 0.5, 0.0, _logps(1, [-5.0 + g]), _logps(1, [-5.0 - g]), ref_c, ref_r)
                  .losses.item() for g in (0.0, 0.5, 1.0)]
        assert values[0] > values[1] > values[2] or loss_type == "ipo", (loss_type, values)
    # IPO's optimum is a per-token gap of 1 / (2 beta), not an unbounded one.
    ipo = [dpo_losses("ipo", 0.5, 0.0, _logps(1, [-5.0 + g], 1), _logps(1, [-5.0 - g], 1), ref_c, ref_r)
           .losses.item() for g in (0.0, 0.5, 2.0)]
    assert ipo[1] == pytest.approx(0.0) and ipo[0] > 0 and ipo[2] > 0
    orpo = [orpo_losses(0.5, _logps(1, [-3.0 + g]), _logps(1, [-3.0 - g])).losses.item() for g in (0.0, 0.5, 1.0)]
    assert orpo[0] > orpo[1] > orpo[2]


def test_label_smoothing_matches_the_flipped_mixture():
    chosen, rejected = _logps(1, [-2.0]), _logps(1, [-6.0])
    ref = torch.tensor([-4.0])
    clean = dpo_losses("sigmoid", 0.2, 0.0, chosen, rejected, ref, ref).losses
    flipped = dpo_losses("sigmoid", 0.2, 0.0, rejected, chosen, ref, ref).losses
    smooth = dpo_losses("sigmoid", 0.2, 0.25, chosen, rejected, ref, ref).losses
    torch.testing.assert_close(smooth, 0.75 * clean + 0.25 * flipped)


def test_log1mexp_is_stable():
    x = torch.tensor([-1e-6, -0.5, -30.0])
    torch.testing.assert_close(log1mexp(x), torch.log(1 - torch.exp(x.double())).float(), rtol=1e-4, atol=1e-6)


def test_token_kl_is_zero_for_equal_models_and_positive_otherwise():
    logits = torch.randn(2, 5, 9)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert token_kl(logits, logits, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert token_kl(logits, logits + torch.randn(2, 5, 9), mask).item() > 0


def test_preference_objective_on_the_tiny_model_starts_at_log2(tiny_model_dir, pairs):
    """dpo through the objective with a peft adapter: the disabled-adapter reference equals the base."""
    from rayloom.models.peft_wrap import wrap_with_peft

    cfg = _cfg("objective=dpo", "peft=lora")
    torch.manual_seed(0)
    model = wrap_with_peft(load_model(tiny_model_dir), cfg.peft)
    objective = build_objective(cfg)
    assert objective.data_kind == "preference" and objective.count_targets(_batch(pairs)) == len(pairs)
    loss = objective.loss_sum(model, _batch(pairs))
    assert loss.item() / len(pairs) == pytest.approx(math.log(2), abs=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    metrics = objective.report_metrics()
    assert metrics["pairs"] == len(pairs) and metrics["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["kl_to_ref"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["logps_chosen"] < 0 and 0.0 <= metrics["pref_accuracy"] <= 1.0
    assert objective.report_metrics() == {}  # a new window


def test_orpo_needs_no_reference(tiny_model_dir, pairs):
    objective = build_objective(_cfg("objective=orpo"))
    model = load_model(tiny_model_dir)
    loss = objective.loss_sum(model, _batch(pairs))
    assert torch.isfinite(loss) and loss.item() > 0
    assert "kl_to_ref" not in objective.report_metrics()


def test_config_checks_name_the_key():
    with pytest.raises(UserError, match="objective.loss_type"):
        _cfg("objective=dpo", "objective.loss_type=ipo")
    with pytest.raises(UserError, match="objective.label_smoothing"):
        _cfg("objective=dpo", "objective.label_smoothing=0.5")
    with pytest.raises(UserError, match="objective.label_smoothing"):
        _cfg("objective=ipo", "objective.label_smoothing=0.1")
    with pytest.raises(UserError, match="objective.reference"):
        _cfg("objective=dpo", "objective.reference=twin")
    cfg = _cfg("objective=dpo", "objective.loss_type=hinge")
    assert cfg.objective.resolved_loss_type == "hinge" and _cfg("objective=ipo").objective.resolved_loss_type == "ipo"
    # Switching objective keeps a valid config (the demo stages do this).
    assert dataclasses.replace(cfg.objective, name="sft").name == "sft"


def test_preference_objectives_refuse_autotp():
    with pytest.raises(UserError, match="deepspeed.tensor_parallel_size"):
        build_objective(_cfg("objective=dpo", "deepspeed=autotp", "train.num_workers=2"))


def test_lm_objective_refuses_preference_shards(tmp_path):
    import json

    from rayloom import storage
    from rayloom.train._data import open_training_data

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "manifest.json").write_text(json.dumps({"kind": "preference", "seq_len": 64, "splits": {}}))
    out = storage.commit_dir(str(staged), str(tmp_path / "shards"))
    with pytest.raises(UserError, match="kind 'lm'.*kind 'preference'"):
        open_training_data(_cfg("objective=sft"), None, out, ("input_ids",))
    (staged / "manifest.json").write_text(json.dumps({"kind": "lm", "seq_len": 64, "splits": {}}))
    out = storage.commit_dir(str(staged), str(tmp_path / "lm-shards"))
    with pytest.raises(UserError, match="preference shards"):
        open_training_data(_cfg("objective=dpo"), None, out, ("chosen_input_ids",), kind="preference")


def test_importing_rayloom_align_registers_its_objectives_with_train():
    assert {name: objective_builder(name) for name in ("dpo", "ipo", "orpo", "safety_sft")} == {
        "dpo": preference_objective, "ipo": preference_objective, "orpo": preference_objective,
        "safety_sft": safety_sft_objective}
