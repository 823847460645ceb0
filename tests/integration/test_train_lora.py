"""LoRA SFT through Ray Train + DeepSpeed: only adapter weights train, the adapter is saved in peft
format, the merged export loads in transformers (and in vLLM, slow), metrics reach MLflow and
TensorBoard."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.train_fixtures import sft_rows, train_overrides

from rayloom.config import compose

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lora_run(ray_local, tiny_model_dir, tmp_path_factory):
    from rayloom.train import train

    root = tmp_path_factory.mktemp("lora-run")
    rows = sft_rows(tiny_model_dir, seq_len=64, num=32)
    cfg = compose("train", train_overrides(root, "experiment=tiny_lora_sft", "train.max_steps=8",
                                           "train.checkpoint_every=4", "train.lr=2e-2", "peft.dropout=0.0",
                                           "train.eval_batches=2", "train.eval_every=4", "tracking=mlflow",
                                           "train.run_name=lora-sft"))
    datasets = {"train": ray_local.data.from_items(rows[:28]), "validation": ray_local.data.from_items(rows[28:])}
    return cfg, train(cfg, datasets=datasets), root


def test_sft_loss_falls_and_validation_is_reported(lora_run):
    _, result, _ = lora_run
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert "val_loss" in result.history[3] and "val_loss" in result.history[-1]
    assert result.history[-1]["num_trainable"] < result.history[-1]["num_params"] / 10


def test_only_adapter_weights_changed(lora_run, tiny_model_dir):
    """The merged model differs from the base only in the LoRA target projections."""
    from safetensors.torch import load_file

    _, result, _ = lora_run
    adapter = load_file(Path(result.adapter_dir) / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert (Path(result.adapter_dir) / "adapter_config.json").is_file()
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    merged = load_file(Path(result.model_dir) / "model.safetensors")
    assert base.keys() == merged.keys()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    assert changed and all(name.split(".")[-2] in targets for name in changed)
    assert all(any(f"{t}.weight" in n for n in changed) for t in targets)


def test_merged_export_equals_base_plus_adapter_in_transformers(lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, result, _ = lora_run
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                             result.adapter_dir)
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits,
                                   atol=1e-4, rtol=1e-4)


def test_intermediate_checkpoint_exports_through_deepspeed_consolidation(lora_run, tmp_path):
    """A checkpoint without a consolidated adapter (step 4) is rebuilt from DeepSpeed's files."""
    from transformers import AutoModelForCausalLM

    from rayloom.train import checkpoints as ckpts
    from rayloom.train import export_main

    _, result, _ = lora_run
    step4 = [uri for step, uri in ckpts.list_checkpoints(result.run_dir) if step == 4][0]
    assert not (Path(step4) / ckpts.ADAPTER_DIR).exists()
    assert export_main([step4, "--out", str(tmp_path / "step4")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "step4")
    final = AutoModelForCausalLM.from_pretrained(result.model_dir)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(model.state_dict()[q], final.state_dict()[q])


def test_metrics_reach_mlflow_and_tensorboard(lora_run):
    from mlflow.tracking import MlflowClient

    from rayloom.train.tracking import default_mlflow_uri

    cfg, result, root = lora_run
    client = MlflowClient(tracking_uri=default_mlflow_uri(str(root)))
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`rayloom.run_name` = 'lora-sft'")
    assert runs and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 9))
    assert runs[0].data.params["peft"] == "lora"
    events = list((Path(root) / "tensorboard" / "lora-sft").glob("events.out.tfevents.*"))
    assert events


@pytest.mark.slow
def test_vllm_serves_the_merged_export(lora_run, tmp_path):
    _, result, _ = lora_run
    script = tmp_path / "gen.py"
    script.write_text(textwrap.dedent(f"""
        import os
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if __name__ == "__main__":
            from vllm import LLM, SamplingParams
            llm = LLM(model={result.model_dir!r}, dtype="float32", max_model_len=256, enforce_eager=True)
            out = llm.chat([{{"role": "user", "content": "What is 2 + 3?"}}],
                           SamplingParams(max_tokens=4, temperature=0))
            print("TOKENS", len(out[0].outputs[0].token_ids))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TOKENS" in out.stdout
