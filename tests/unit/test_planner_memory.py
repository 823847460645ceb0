"""Each term of the planner's memory model against values computed by hand for the tiny-2l shape
(vocab 512, hidden 128, MLP 256, 2 layers, 2 heads, 2 KV heads)."""

from __future__ import annotations

import dataclasses

import pytest

from rayloom.planner.memory import Setup, activation_bytes_per_token_layer, estimate, trainable_params
from rayloom.planner.shapes import KNOWN, ModelShape

TINY = ModelShape("tiny-2l", vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2,
                  num_kv_heads=2)
# embed 512*128 + head 512*128 + 2 layers x (4 x 128*128 + 3 x 128*256 + 2 x 128 norms) + final norm 128
TINY_PARAMS = 65_536 + 65_536 + 2 * (4 * 16_384 + 3 * 32_768 + 256) + 128
BASE = Setup(zero_stage=2, precision="fp32", num_workers=2, micro_batch_size=2, seq_len=64, use_gpu=False)


def _term(breakdown, name):
    term = breakdown.get(name)
    assert term is not None, f"no term {name!r} in {[t.name for t in breakdown.terms]}"
    return term.device + term.host


def test_parameter_counts_match_hand_counts_and_published_sizes():
    assert TINY.num_params == TINY_PARAMS == 459_392
    assert KNOWN["llama-3.1-8b"].num_params == 8_030_261_248  # Meta's model card: 8.03B
    assert KNOWN["llama-3.2-1b"].num_params == 1_235_814_400  # tied embeddings: 1.24B
    assert KNOWN["llama-3.1-70b"].num_params == 70_553_706_496


def test_parameter_count_matches_transformers():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    gqa = dataclasses.replace(TINY, num_kv_heads=1)
    assert sum(p.numel() for p in model.parameters()) == gqa.num_params


def test_model_state_terms_fp32_zero2_two_workers():
    b = estimate(TINY, BASE)
    assert _term(b, "parameters") == 4 * TINY_PARAMS
    assert _term(b, "gradients") == 4 * TINY_PARAMS / 2
    assert _term(b, "fp32 master partition") == 4 * TINY_PARAMS / 2
    assert _term(b, "optimizer states (Adam m, v)") == 8 * TINY_PARAMS / 2
    assert b.get("fp32 gradient partition").phase == "step"
    # torch's foreach AdamW (CPU, no offload) allocates sqrt(v) during the step.
    assert _term(b, "AdamW step temporaries (torch foreach)") == 4 * TINY_PARAMS / 2
    # CPU RSS sees only the touched part of the 50M-element bucket: at most the trainable count.
    assert _term(b, "reduce buckets") == 4 * TINY_PARAMS
    assert b.device_is_host


def test_bf16_zero0_keeps_fp32_master_and_accumulator():
    b = estimate(TINY, dataclasses.replace(BASE, zero_stage=0, precision="bf16"))
    assert _term(b, "parameters") == 2 * TINY_PARAMS
    assert _term(b, "gradients") == 2 * TINY_PARAMS
    assert _term(b, "fp32 master weights") == 4 * TINY_PARAMS
    assert _term(b, "fp32 gradient accumulator") == 4 * TINY_PARAMS
    assert _term(b, "optimizer states (Adam m, v)") == 8 * TINY_PARAMS
    assert b.get("reduce buckets") is None


def test_zero3_offload_moves_states_and_parameters_to_the_host():
    setup = dataclasses.replace(BASE, zero_stage=3, offload_optimizer="cpu", offload_param="cpu", use_gpu=True)
    b = estimate(TINY, setup)
    params = b.get("parameters")
    assert (params.device, params.host) == (0.0, 4 * TINY_PARAMS / 2)
    states = b.get("optimizer states (Adam m, v)")
    assert (states.device, states.host) == (0.0, 8 * TINY_PARAMS / 2)
    # Gathered for compute: one layer + the prefetch bucket, capped by the model's size.
    assert b.get("zero3 gathered parameters").device == 4 * TINY_PARAMS
    # On a GPU the whole reduce bucket is allocated.
    assert b.get("reduce buckets").device == 4 * 50_000_000
    assert not b.device_is_host


def test_activations_per_layer_full_fine_tuning_fp32():
    # 36h + 8kv + 16f + 4a = 36*128 + 8*128 + 16*256 + 4*2
    assert activation_bytes_per_token_layer(TINY, BASE) == 9_736
    b = estimate(TINY, BASE)
    tokens = 2 * 64
    per_token = 2 * 9_736 + (4 * 128 + 4 * 128) + 32  # layers + final norm + int64 input columns
    assert _term(b, "activations") == tokens * per_token


def test_activation_checkpointing_keeps_layer_inputs_and_one_layer():
    b = estimate(TINY, dataclasses.replace(BASE, gradient_checkpointing=True))
    per_token = 2 * 4 * 128 + 9_736 + 1_024 + 32
    assert _term(b, "activations") == 2 * 64 * per_token


def test_bf16_activations():
    # norms 2*(4h + 2h) + attn 2*(h + 2kv) + 2h + 4a + 2h + 2h + mlp 3*2f + 2h + 2f
    h, f, a = 128, 256, 2
    expected = 2 * (4 * h + 2 * h) + 2 * (3 * h) + 2 * h + 4 * a + 2 * h + 2 * h + 6 * f + 2 * h + 2 * f
    assert activation_bytes_per_token_layer(TINY, dataclasses.replace(BASE, precision="bf16")) == expected


def test_logits_and_loss_buffers():
    b = estimate(TINY, BASE)
    assert _term(b, "logits and loss buffers") == 2 * 64 * 512 * 12
    b16 = estimate(TINY, dataclasses.replace(BASE, precision="bf16"))
    assert _term(b16, "logits and loss buffers") == 2 * 64 * 512 * 14


LORA = dataclasses.replace(BASE, peft_method="lora", lora_r=8, lora_targets=("q_proj", "v_proj"))


def test_lora_adapters_and_their_optimizer_states():
    assert trainable_params(TINY, LORA) == 2 * 2 * 8 * (128 + 128)
    b = estimate(TINY, LORA)
    n = 8_192
    assert _term(b, "parameters") == 4 * TINY_PARAMS + 4 * n  # frozen base + adapters
    assert _term(b, "gradients") == 4 * n / 2
    assert _term(b, "optimizer states (Adam m, v)") == 8 * n / 2


def test_lora_activations_skip_inputs_of_frozen_linears():
    # norms 2*4h; attn 4(h+2kv) + 4h + 4a + 4h (q/v targeted); mlp 3*4f; lora 2 x 4r
    expected = 2 * 4 * 128 + 4 * 3 * 128 + 4 * 128 + 8 + 4 * 128 + 12 * 256 + 2 * 4 * 8
    assert activation_bytes_per_token_layer(TINY, LORA) == expected == 6_728


def test_qlora_base_is_four_bit():
    setup = dataclasses.replace(LORA, peft_method="qlora", precision="bf16", use_gpu=True)
    b = estimate(TINY, setup)
    quantized = 2 * (4 * 16_384 + 3 * 32_768)
    other = TINY_PARAMS - quantized
    assert _term(b, "parameters") == pytest.approx(quantized * 4.127 / 8 + other * 4 + 2 * 8_192)


def test_dpo_reference_copy_and_doubled_rows():
    setup = dataclasses.replace(BASE, preference=True, uses_reference=True, reference_copy=True)
    b = estimate(TINY, setup)
    assert _term(b, "reference model copy") == 4 * TINY_PARAMS
    # chosen + rejected rows; policy logits 4V + reference logits 4V + two fp32 gradients 8V
    assert _term(b, "logits and loss buffers") == 2 * 2 * 64 * 512 * 16
    adapter_disabled = estimate(TINY, dataclasses.replace(LORA, preference=True, uses_reference=True))
    assert adapter_disabled.get("reference model copy") is None


def test_rollout_kv_cache_and_peak_phases():
    b = estimate(TINY, dataclasses.replace(BASE, rollout_kv_cache_bytes=1_000))
    assert _term(b, "rollout KV cache") == 1_000
    persistent = sum(t.device for t in b.terms if t.phase == "persistent")
    fwd = sum(t.device for t in b.terms if t.phase == "fwd_bwd")
    step = sum(t.device for t in b.terms if t.phase == "step")
    assert b.device_peak == persistent + max(fwd, step)
    assert b.total_peak == b.device_peak + b.host_peak


def test_gradients_live_past_the_activation_peak_only_with_accumulation():
    one = estimate(TINY, BASE)
    assert one.get("gradients").phase == "step"
    accumulating = estimate(TINY, dataclasses.replace(BASE, grad_accum=4))
    assert accumulating.get("gradients").phase == "persistent"
    # ZeRO-3 zero-fills its gradient partition buffer at initialisation.
    assert estimate(TINY, dataclasses.replace(BASE, zero_stage=3)).get("gradients").phase == "persistent"


def test_zero1_keeps_its_gradient_partition_and_offload_keeps_gradients_whole():
    assert _term(estimate(TINY, dataclasses.replace(BASE, zero_stage=1)), "gradients") == 4 * TINY_PARAMS / 2
    offload = estimate(TINY, dataclasses.replace(BASE, offload_optimizer="cpu"))
    assert _term(offload, "gradients") == 4 * TINY_PARAMS
    assert offload.get("fp32 gradient partition").host == 4 * TINY_PARAMS / 2


def test_zero3_reduce_scatter_staging_and_bucket_phase_by_device():
    cpu = estimate(TINY, dataclasses.replace(BASE, zero_stage=3))
    assert _term(cpu, "zero3 reduce-scatter staging") == 4 * TINY_PARAMS * 1.5
    assert cpu.get("reduce buckets").phase == "step"  # CPU RSS: pages touched late in backward
    gpu = estimate(TINY, dataclasses.replace(BASE, zero_stage=3, use_gpu=True))
    assert gpu.get("reduce buckets").phase == "fwd_bwd"  # GPU allocator: all of it at backward start
