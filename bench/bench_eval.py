"""Evaluation throughput: rayloom's offline target (vLLM actors in a Ray Data pool) vs a plain
transformers loop on the same requests, plus vLLM engine start in-process vs with its extra engine process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time

from harness import Result

DESCRIPTION = ("eval: rayloom offline target (Ray Data + vLLM, all tasks in one pass) vs a transformers "
               "generate/forward loop on the same requests; vLLM engine start in-process vs multiprocess")

TASKS = ["demo_arith", "python_qa", "demo_arith_mc", "python_mc", "heldout_text"]


def _requests(max_examples: int):
    from rayloom.config import compose
    from rayloom.eval.request_plan import all_requests, build_plans
    from rayloom.eval.tasks import load_task_registry

    cfg = compose("eval", ["model=tiny-2l", f"eval.tasks=[{','.join(TASKS)}]", f"eval.max_examples={max_examples}",
                           "eval.max_model_len=512"])
    return cfg, all_requests(build_plans(cfg.eval, load_task_registry()))


def _transformers_loop(model_dir: str, requests) -> tuple[float, dict]:
    """The hand-rolled baseline: one generate() or forward() per request, greedy, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayloom.eval.offline import render_context
    from rayloom.eval.requests import GENERATE

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = {}
    with torch.no_grad():
        for r in requests:
            if r.kind == GENERATE:
                if r.is_chat:
                    text = tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
                    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
                else:
                    ids = tokenizer(r.prompt, return_tensors="pt")["input_ids"]
                out = model.generate(ids, max_new_tokens=r.max_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                answers[r.id] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            else:
                context, special = render_context(r, tokenizer)
                enc = tokenizer(context + r.continuation, add_special_tokens=special, return_offsets_mapping=True,
                                return_tensors="pt")
                logits = model(input_ids=enc["input_ids"]).logits[0].log_softmax(-1)
                ids = enc["input_ids"][0]
                starts = enc["offset_mapping"][0][:, 0]
                total = sum(logits[i - 1, ids[i]].item() for i in range(1, len(ids)) if starts[i] >= len(context))
                answers[r.id] = total
    return time.perf_counter() - start, answers


def _warm_engine(model_dir: str, requests) -> float:
    """Seconds for an already-loaded in-process engine to answer the requests (no start-up cost)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as data:
        data.write("".join(r.to_json() + "\n" for r in requests))
    script = textwrap.dedent(f"""
        import os, time
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"
        if __name__ == "__main__":
            from transformers import AutoTokenizer
            from vllm import LLM, SamplingParams
            from rayloom.eval.offline import answer_requests
            from rayloom.eval.requests import EvalRequest
            requests = [EvalRequest.from_json(line) for line in open({data.name!r})]
            llm = LLM(model={model_dir!r}, dtype="float32", max_model_len=512, enforce_eager=True)
            tokenizer = AutoTokenizer.from_pretrained({model_dir!r})
            answer_requests(llm, tokenizer, requests[:8], 512)
            start = time.perf_counter()
            answer_requests(llm, tokenizer, requests, 512)
            print("WARM_S", time.perf_counter() - start)
    """)
    try:
        return _timed_script(script, "WARM_S")
    finally:
        os.unlink(data.name)


def _timed_script(script: str, marker: str) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run([sys.executable, handle.name], capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(handle.name)
    lines = [x for x in out.stdout.splitlines() if x.startswith(marker)]
    if not lines:
        raise RuntimeError(f"benchmark script failed: {out.stderr[-2000:]}")
    return float(lines[0].split()[1])


def _engine_start(model_dir: str, multiprocessing: bool) -> float:
    script = textwrap.dedent(f"""
        import os, time
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "{int(multiprocessing)}"
        os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"
        if __name__ == "__main__":
            start = time.perf_counter()
            from vllm import LLM, SamplingParams
            llm = LLM(model={model_dir!r}, dtype="float32", max_model_len=512, enforce_eager=True)
            llm.generate(["hello"], SamplingParams(max_tokens=1), use_tqdm=False)
            print("ENGINE_READY_S", time.perf_counter() - start)
    """)
    return _timed_script(script, "ENGINE_READY_S")


def run(quick: bool = False) -> Result:
    from rayloom.config import ClusterConfig
    from rayloom.eval.offline import OfflineTarget
    from rayloom.eval.requests import GENERATE
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray

    cfg, requests = _requests(10 if quick else 40)
    model_dir = str(resolve_model_dir(cfg.model))
    init_ray(ClusterConfig(num_cpus=4))
    start = time.perf_counter()
    offline = OfflineTarget(cfg.model, cfg.eval).run(requests)
    rayloom_s = time.perf_counter() - start
    hf_s, hf = _transformers_loop(model_dir, requests)
    gens = [r for r in requests if r.kind == GENERATE]
    scores = [r for r in requests if r.kind != GENERATE]
    same_text = sum(offline[r.id].text == hf[r.id] for r in gens) / max(1, len(gens))
    close = sum(abs(offline[r.id].logprob - hf[r.id]) < 1e-3 for r in scores) / max(1, len(scores))
    warm_s = _warm_engine(model_dir, requests)
    in_process = _engine_start(model_dir, multiprocessing=False)
    multi = _engine_start(model_dir, multiprocessing=True)
    rows = [
        {"system": "rayloom offline (Ray Data + vLLM, 1 replica)", "requests": len(requests), "wall_s": rayloom_s,
         "requests_per_s": len(requests) / rayloom_s},
        {"system": "vLLM engine already loaded (steady state of one replica)", "requests": len(requests),
         "wall_s": warm_s, "requests_per_s": len(requests) / warm_s},
        {"system": "transformers loop (generate / forward per request)", "requests": len(requests), "wall_s": hf_s,
         "requests_per_s": len(requests) / hf_s},
        {"system": "vLLM engine start, in-process engine core (rayloom's actors)", "wall_s": in_process},
        {"system": "vLLM engine start, separate engine-core process (vLLM default)", "wall_s": multi},
    ]
    return Result(
        name="eval", description=DESCRIPTION, rows=rows,
        ratios={"rayloom offline / transformers loop (requests/s)": hf_s / rayloom_s,
                "warm vLLM engine / transformers loop (requests/s)": hf_s / warm_s,
                "in-process / multiprocess engine start (time)": in_process / multi},
        goals={"rayloom offline / transformers loop (requests/s)": ">= 1 once the workload outweighs engine start",
               "warm vLLM engine / transformers loop (requests/s)": ">= 1 on real model sizes",
               "in-process / multiprocess engine start (time)": "< 1"},
        notes=[f"tasks {', '.join(TASKS)}: {len(gens)} greedy generations, {len(scores)} log-likelihood requests; "
               "the rayloom wall time includes Ray Data actor start and the vLLM engine load",
               f"agreement with the transformers loop: identical generations {same_text:.0%}, "
               f"log-likelihoods within 1e-3 nats {close:.0%}"])
