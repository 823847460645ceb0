"""The offline engine: lm-eval's vLLM backend, data-parallel over Ray actors.

`RayVLLM` is an lm-eval `LM`: lm-eval builds the requests (few-shot, chat template, rolling
windows) and scores the answers; each of `eval.num_replicas` Ray actors holds one lm-eval `VLLM`
model (one engine, loaded once) and answers an interleaved share of every request list. On a
cluster the actors spread over nodes (CPUs or GPUs per replica from the eval group).

lm-eval's own `data_parallel_size` also uses Ray, but it reserves `num_gpus` per replica (no CPU
engines), starts and shuts down Ray itself (it would end rayloom's session) and reloads the
engines for every request type; these actors live for the whole run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from rayloom.config import EvalConfig, ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """The engine knobs an actor needs, picked from EvalConfig (a small picklable record)."""

    dtype: str = "auto"
    max_model_len: int = 1024
    kv_cache_gib: int = 1
    enforce_eager: bool = True
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> EngineSettings:
        return cls(dtype=cfg.dtype, max_model_len=cfg.max_model_len, kv_cache_gib=cfg.kv_cache_gib,
                   enforce_eager=cfg.enforce_eager, seed=cfg.seed)


def engine_env(kv_cache_gib: int) -> None:
    # Read by vLLM at import/engine start, so set before importing it. In-process engine core:
    # the actor is already its own process, and skipping vLLM's extra engine process halves the
    # load time on CPU. setdefault: an operator's explicit setting wins.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def alias_vllm_cpu_distribution() -> None:
    """Let lm-eval's vLLM backend find the `vllm-cpu` distribution under the name `vllm`.

    lm-eval picks vLLM's import paths from `importlib.metadata.version("vllm")`; the CPU build is
    published as `vllm-cpu` (same `vllm` package, other distribution name), so that lookup fails
    there. Where `vllm` is installed (GPU images) this does nothing.
    """
    import importlib.metadata as metadata

    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        pass
    original = metadata.version

    def version(name: str) -> str:
        # "+cpu", as vLLM's own fallback (vllm.platforms) reports it: its CPU platform detection reads it.
        return original("vllm-cpu") + "+cpu" if name == "vllm" else original(name)

    metadata.version = version


def _config_value(model_dir: str, *keys: str):
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    return next((data[k] for k in keys if data.get(k) is not None), None)


def engine_dtype(model_dir: str, requested: str) -> str:
    """"auto" -> the dtype the checkpoint was saved in. vLLM's own "auto" runs float32 checkpoints
    in bfloat16 on CPU, which would make scores differ from the model as trained."""
    if requested != "auto":
        return requested
    saved = _config_value(model_dir, "dtype", "torch_dtype")
    return saved if saved in ("float32", "bfloat16", "float16") else "auto"


def capped_context(model_dir: str, requested: int) -> int:
    """eval.max_model_len, capped at the model's own limit (vLLM refuses a longer window)."""
    limit = _config_value(model_dir, "max_position_embeddings")
    if limit and requested > limit:
        log.warning("eval.max_model_len=%d exceeds the model's max_position_embeddings=%d; using %d",
                    requested, limit, limit)
        return int(limit)
    return requested


def vllm_model_args(model_dir: str, settings: EngineSettings) -> dict:
    """lm-eval's `vllm` model arguments for one engine (also what `lm_eval --model vllm` is given)."""
    return {"pretrained": model_dir, "dtype": engine_dtype(model_dir, settings.dtype),
            "max_model_len": capped_context(model_dir, settings.max_model_len),
            "enforce_eager": settings.enforce_eager, "seed": settings.seed, "batch_size": "auto",
            "gpu_memory_utilization": 0.9}


class HarnessReplica:
    """A Ray actor: one lm-eval VLLM model answering its share of each request list."""

    def __init__(self, model: ModelConfig, settings: EngineSettings):
        engine_env(settings.kv_cache_gib)
        alias_vllm_cpu_distribution()
        from lm_eval.models.vllm_causallms import VLLM  # here: vLLM loads torch; only engine actors need it

        from rayloom.models import resolve_model_dir

        # Resolved on the actor's node: an s3:// model is downloaded there, a preset built there.
        model_dir = str(resolve_model_dir(model))
        self.lm = VLLM(**vllm_model_args(model_dir, settings), trust_remote_code=model.trust_remote_code)

    def answer(self, method: str, requests: list) -> list:
        return getattr(self.lm, method)(requests, disable_tqdm=True)


def interleave(requests: list, n: int) -> list[list]:
    """Request i goes to replica i % n: long and short requests stay mixed across replicas."""
    return [requests[i::n] for i in range(n)]


def merge_interleaved(parts: list[list], n: int, total: int) -> list:
    """The answers of `interleave`'s shares back in request order (empty shares are the trailing ones)."""
    out = [None] * total
    for i, part in enumerate(parts):
        out[i::n] = part
    return out


def _lm_base():
    from lm_eval.api.model import LM  # here: lm-eval is imported when a run starts

    return LM


def make_ray_vllm(model: ModelConfig, cfg: EvalConfig, model_dir: str):
    """An lm-eval LM whose requests are answered by `cfg.num_replicas` HarnessReplica actors."""
    import ray  # here: Ray only when an offline run starts

    settings = EngineSettings.from_config(cfg)
    resources = {"num_cpus": cfg.cpus_per_replica}
    if cfg.gpus_per_replica:
        resources["num_gpus"] = cfg.gpus_per_replica
    actor = ray.remote(**resources)(HarnessReplica)

    class RayVLLM(_lm_base()):
        def __init__(self):
            super().__init__()
            from transformers import AutoTokenizer  # here: the driver renders chat templates itself

            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=model.trust_remote_code)
            self.replicas = [actor.remote(model, settings) for _ in range(cfg.num_replicas)]
            log.info("offline eval: lm-eval vLLM on %d Ray replica(s)", cfg.num_replicas)

        def _spread(self, method: str, requests: list) -> list:
            shares = interleave(requests, len(self.replicas))
            answers = ray.get([r.answer.remote(method, share) for r, share in zip(self.replicas, shares, strict=True)
                               if share])
            return merge_interleaved(answers, len(self.replicas), len(requests))

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self._spread("loglikelihood", requests)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return self._spread("loglikelihood_rolling", requests)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return self._spread("generate_until", requests)

        @property
        def tokenizer_name(self) -> str:
            return self.tokenizer.name_or_path.replace("/", "__")

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return self.tokenizer.chat_template if chat_template else None

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            # As lm-eval's VLLM does it, so the prompt is the one the engine would render itself.
            return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt)

        def close(self) -> None:
            for replica in self.replicas:
                ray.kill(replica)
            self.replicas = []

    return RayVLLM()
