"""The pieces between vLLM and the loss, without an engine: the rollout's tensor layout and the
weights pushed to the engines (Hugging Face names; LoRA merged equals peft's own merge)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_rollout_left_pads_prompts_and_masks_completions():
    from rayloom.align.grpo import Rollout
    from rayloom.align.rollout import Completion

    prompts = [[11, 12, 13], [21]]
    completions = [[Completion([1, 2], "a", True, [-0.5, -1.5]), Completion([3], "b", False, [-2.0])],
                   [Completion([4, 5, 6], "c", True, [-0.1] * 3), Completion([], "", False, [])]]
    r = Rollout(prompts, completions, torch.zeros(4), torch.tensor([1.0, -1.0, 0.5, -0.5]), {}, pad_id=0,
                device=torch.device("cpu"))
    assert r.prompt_len == 3
    assert r.input_ids.tolist() == [[11, 12, 13, 1, 2, 0], [11, 12, 13, 3, 0, 0], [0, 0, 21, 4, 5, 6],
                                    [0, 0, 21, 0, 0, 0]]
    assert r.completion_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert r.position_ids[2].tolist()[2:] == [0, 1, 2, 3]  # positions start at the first real token
    assert r.finished == [True, False, True, False]
    # The engine's log-prob of each sampled token, laid out like the completion mask.
    assert torch.allclose(r.engine_logps, torch.tensor([[-0.5, -1.5, 0], [-2.0, 0, 0], [-0.1] * 3, [0, 0, 0]]))


def test_lora_weights_are_merged_under_hugging_face_names(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rayloom.align.grpo import policy_weights

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    names = {n for n, _ in base.named_parameters()}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)  # a trained adapter (B starts at 0)
    pushed = dict(policy_weights(model, zero_stage=0))
    assert set(pushed) == names
    merged = model.merge_and_unload()
    for name, p in merged.named_parameters():
        assert torch.allclose(pushed[name], p, atol=1e-6), name
    assert not torch.allclose(pushed["model.layers.0.self_attn.q_proj.weight"],
                              AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()[
                                  "model.layers.0.self_attn.q_proj.weight"])
