"""Rollout engines for objective=grpo: vLLM engines in Ray actors, and their weight updates.

Each training worker owns `objective.grpo.num_engines` engines (`RolloutPool`). An engine is a
`vllm.LLM` with its engine core in the actor's own process (VLLM_ENABLE_V1_MULTIPROCESSING=0),
so a weight update is one in-process call: the worker sends the policy's weights (Hugging Face
names, the trained values; LoRA merged) through the Ray object store and the engine loads them
with vLLM 0.32's in-place `reload_weights(weights_iterator=...)` (the model's own load_weights,
which stacks q/k/v and gate/up as at start-up), then resets its prefix cache, whose KV blocks
were computed with the old weights. The same path runs on a GPU engine (the tensors are copied
to the device by load_weights); it moves the weights through the object store, not NCCL.

A dead engine (actor died, node lost) is replaced on the next call: a new actor loads the
starting model and then the newest weights (kept in the object store), up to
grpo.max_engine_restarts times per worker.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finished: bool          # ended with the end-of-turn token (not cut at max_completion_tokens)
    logprobs: list[float]   # the engine's log-probability of each sampled token


class RolloutEngine:
    """A Ray actor around one vllm.LLM."""

    def __init__(self, model_dir: str, dtype: str, max_model_len: int, kv_cache_gib: float, seed: int) -> None:
        # Read by vLLM when it starts; in-process engine core so update_weights reaches the model.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(kv_cache_gib)))))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        from vllm import LLM  # here: vLLM (and torch) load only in the engine actor

        # processed_logprobs: each sampled token's log-prob after temperature (and top-p), the
        # distribution it was sampled from, which the trainer's log-probs are compared with
        # (rollout_logprob_diff); prompt log-probs (token_logprobs) are the same in every mode.
        self.llm = LLM(model=model_dir, dtype=dtype, max_model_len=max_model_len, enforce_eager=True, seed=seed,
                       enable_prefix_caching=True, gpu_memory_utilization=0.5, logprobs_mode="processed_logprobs")
        self.tokenizer = self.llm.get_tokenizer()
        self.weights_version = 0

    def ping(self) -> int:
        return os.getpid()

    def generate(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float,
                 seed: int | None) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                logprobs=0, skip_special_tokens=True)
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [[Completion(list(c.token_ids), c.text, c.finish_reason == "stop",
                            [next(iter(lp.values())).logprob if lp else float("nan") for lp in (c.logprobs or [])])
                 for c in out.outputs] for out in outputs]

    def decode(self, sequences: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(s, skip_special_tokens=True) for s in sequences]

    def token_logprobs(self, prompt: list[int], continuation: list[int]) -> list[float]:
        """log p(continuation | prompt) per token, as the engine computes it (prompt logprobs)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        out = self.llm.generate([{"prompt_token_ids": prompt + continuation}], params, use_tqdm=False)[0]
        scored = out.prompt_logprobs[len(prompt):]
        return [entry[token].logprob for entry, token in zip(scored, continuation, strict=True)]

    def update_weights(self, weights: list, version: int) -> float:
        """Load (name, tensor) pairs in Hugging Face naming into the running model; reset the prefix cache."""
        started = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights),
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.weights_version = version
        return time.perf_counter() - started


@dataclass(frozen=True)
class EngineSpec:
    model_dir: str
    dtype: str
    max_model_len: int
    kv_cache_gib: float
    seed: int
    num_cpus: float
    num_gpus: float


class RolloutPool:
    """One worker's rollout engines: round-robin generation, weight updates, dead-engine replacement."""

    def __init__(self, spec: EngineSpec, num_engines: int, max_restarts: int) -> None:
        self.spec = spec
        self.max_restarts = max_restarts
        self.restarts = 0
        self.weights_ref = None  # newest pushed weights, for replacements
        self.version = 0
        self.engines = [self._start(i) for i in range(num_engines)]
        import ray

        ray.get([e.ping.remote() for e in self.engines])

    def _start(self, index: int):
        import ray  # here: only a worker that runs GRPO starts actors

        spec = self.spec
        actor = ray.remote(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_restarts=0)(RolloutEngine)
        return actor.options(name=None).remote(spec.model_dir, spec.dtype, spec.max_model_len, spec.kv_cache_gib,
                                               spec.seed + index)

    def _replace(self, index: int, error: Exception) -> None:
        import ray

        if self.restarts >= self.max_restarts:
            raise RuntimeError(f"rollout engine {index} died and objective.grpo.max_engine_restarts="
                               f"{self.max_restarts} replacements are used up: {error}") from error
        self.restarts += 1
        log.warning("rollout engine %d died (%s); starting a replacement (%d of %d)", index,
                    type(error).__name__, self.restarts, self.max_restarts)
        engine = self._start(index)
        if self.weights_ref is not None:
            ray.get(engine.update_weights.remote(self.weights_ref, self.version))
        self.engines[index] = engine

    def _call_all(self, calls: list[tuple[int, str, tuple]]) -> list:
        """Run engine methods in parallel; a call whose engine died is retried on a replacement."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        refs = [getattr(self.engines[i], method).remote(*args) for i, method, args in calls]
        results = []
        for (index, method, args), ref in zip(calls, refs, strict=True):
            while True:
                try:
                    results.append(ray.get(ref))
                    break
                except (RayActorError, ActorDiedError, ActorUnavailableError) as error:
                    self._replace(index, error)
                    ref = getattr(self.engines[index], method).remote(*args)
        return results

    def generate(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float,
                 seed: int | None) -> list[list[Completion]]:
        count = len(self.engines)
        shares = [list(range(i, len(prompts), count)) for i in range(count)]
        calls = [(i, "generate", ([prompts[j] for j in share], n, max_tokens, temperature, top_p,
                                  None if seed is None else seed + i))
                 for i, share in enumerate(shares) if share]
        out: list = [None] * len(prompts)
        for (i, _, _), result in zip(calls, self._call_all(calls), strict=True):
            for j, completions in zip(shares[i], result, strict=True):
                out[j] = completions
        return out

    def decode(self, sequences: list[list[int]]) -> list[str]:
        return self._call_all([(0, "decode", (sequences,))])[0]

    def token_logprobs(self, prompt: list[int], continuation: list[int], index: int = 0) -> list[float]:
        return self._call_all([(index, "token_logprobs", (prompt, continuation))])[0]

    def update_weights(self, weights: list) -> float:
        """Push new weights to every engine; seconds until the slowest has them."""
        import ray

        started = time.perf_counter()
        self.version += 1
        self.weights_ref = ray.put(weights)
        self._call_all([(i, "update_weights", (self.weights_ref, self.version)) for i in range(len(self.engines))])
        return time.perf_counter() - started

    def shutdown(self) -> None:
        import ray

        for engine in self.engines:
            ray.kill(engine)
