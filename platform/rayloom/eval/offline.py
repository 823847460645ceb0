"""Offline target: vLLM engines in a Ray Data actor pool answer every request of a run.

`ds.map_batches(VLLMPredictor, compute=ActorPoolStrategy(size=eval.num_replicas))`: each actor
loads one engine once and serves all batches routed to it, so a run (all its tasks and probes)
costs one engine load per replica; on a cluster the replicas spread over nodes (CPUs or GPUs).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from rayloom.config import EvalConfig, ModelConfig
from rayloom.eval.requests import GENERATE, LOGLIKELIHOOD, EvalRequest, EvalResponse, score_span
from rayloom.models import resolve_model_dir

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


def _engine_env(settings: EngineSettings) -> None:
    # Read by vLLM at import/engine start, so set before importing it. In-process engine core:
    # the actor is already its own process, and skipping vLLM's extra engine process halves the
    # load time on CPU. setdefault: an operator's explicit setting wins.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def _engine_dtype(model_dir: str, requested: str) -> str:
    """"auto" -> the dtype the checkpoint was saved in. vLLM's own "auto" runs float32 checkpoints
    in bfloat16 on CPU, which would make scores differ from the model as trained and from
    transformers; an explicit eval.dtype (e.g. bfloat16 for speed) is used as given."""
    if requested != "auto":
        return requested
    config = os.path.join(model_dir, "config.json")
    if os.path.isfile(config):
        with open(config) as handle:
            data = json.load(handle)
        saved = data.get("dtype") or data.get("torch_dtype")
        if saved in ("float32", "bfloat16", "float16"):
            return saved
    return "auto"


def _capped_context(model_dir: str, requested: int) -> int:
    """eval.max_model_len, capped at the model's own limit (vLLM refuses a longer window)."""
    config = os.path.join(model_dir, "config.json")
    limit = None
    if os.path.isfile(config):
        with open(config) as handle:
            limit = json.load(handle).get("max_position_embeddings")
    if limit and requested > limit:
        log.warning("eval.max_model_len=%d exceeds the model's max_position_embeddings=%d; using %d",
                    requested, limit, limit)
        return int(limit)
    return requested


class VLLMPredictor:
    """A Ray Data actor: one vLLM engine, answering batches of JSON-encoded EvalRequests."""

    def __init__(self, model: ModelConfig, settings: EngineSettings):
        _engine_env(settings)
        from transformers import AutoTokenizer  # here: on the engine actor only (heavy)
        from vllm import LLM  # here: vLLM loads torch; only engine actors need it

        # Resolved on the actor's node: an s3:// model is downloaded there, a preset built there.
        model_dir = str(resolve_model_dir(model))
        self.max_model_len = _capped_context(model_dir, settings.max_model_len)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=model.trust_remote_code)
        self.llm = LLM(model=model_dir, dtype=_engine_dtype(model_dir, settings.dtype),
                       max_model_len=self.max_model_len,
                       enforce_eager=settings.enforce_eager, seed=settings.seed,
                       trust_remote_code=model.trust_remote_code)

    def __call__(self, batch: dict) -> dict:
        import numpy as np  # here: only the actor's batches need it

        requests = [EvalRequest.from_json(text) for text in batch["request"]]
        responses = answer_requests(self.llm, self.tokenizer, requests, self.max_model_len)
        return {"response": np.array([r.to_json() for r in responses], dtype=object)}


def answer_requests(llm, tokenizer, requests: list[EvalRequest], max_model_len: int) -> list[EvalResponse]:
    """Answer a batch with one engine call per kind of request (vLLM batches each call itself)."""
    answers: dict[str, EvalResponse] = {}
    chats = [r for r in requests if r.kind == GENERATE and r.is_chat]
    texts = [r for r in requests if r.kind == GENERATE and not r.is_chat]
    scores = [r for r in requests if r.kind == LOGLIKELIHOOD]
    answers.update(_generate(llm, tokenizer, chats, max_model_len, chat=True))
    answers.update(_generate(llm, tokenizer, texts, max_model_len, chat=False))
    answers.update(_loglikelihood(llm, tokenizer, scores, max_model_len))
    return [answers[r.id] for r in requests]


def _sampling(request: EvalRequest, **extra):
    from vllm import SamplingParams  # here: vLLM only on engine actors

    # Greedy: the same request gives the same answer here and at an endpoint.
    return SamplingParams(temperature=0.0, max_tokens=request.max_tokens, stop=request.stop or None, **extra)


def _too_long(num_tokens: int, max_model_len: int) -> str:
    return f"prompt has {num_tokens} tokens; the engine's context (eval.max_model_len) is {max_model_len}"


def _generate(llm, tokenizer, requests: list[EvalRequest], max_model_len: int, chat: bool) -> dict[str, EvalResponse]:
    answers, ready = {}, []
    for request in requests:
        if chat:
            text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            num_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            num_tokens = len(tokenizer(request.prompt)["input_ids"])
        # One over-long prompt must not fail the whole batch: it is answered with an error.
        if num_tokens >= max_model_len:
            answers[request.id] = EvalResponse(request.id, error=_too_long(num_tokens, max_model_len))
        else:
            ready.append(request)
    if not ready:
        return answers
    params = [_sampling(r) for r in ready]
    if chat:
        outputs = llm.chat([r.messages for r in ready], params, use_tqdm=False)
    else:
        outputs = llm.generate([r.prompt for r in ready], params, use_tqdm=False)
    for request, output in zip(ready, outputs, strict=True):
        answers[request.id] = EvalResponse(request.id, text=output.outputs[0].text)
    return answers


def render_context(request: EvalRequest, tokenizer) -> tuple[str, bool]:
    """(context text, whether tokenizing it must add special tokens) for a log-likelihood request.

    Chat contexts are rendered with the model's chat template, which writes its own BOS, so the
    text is tokenized without special tokens (as vLLM's chat path does).
    """
    if request.is_chat:
        return tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True), False
    return request.prompt, True


def _loglikelihood(llm, tokenizer, requests: list[EvalRequest], max_model_len: int) -> dict[str, EvalResponse]:
    from vllm import SamplingParams  # here: vLLM only on engine actors

    answers, ready, encoded = {}, [], []
    for request in requests:
        context, special = render_context(request, tokenizer)
        enc = tokenizer(context + request.continuation, add_special_tokens=special, return_offsets_mapping=True)
        if len(enc["input_ids"]) >= max_model_len:
            answers[request.id] = EvalResponse(request.id, error=_too_long(len(enc["input_ids"]), max_model_len))
            continue
        ready.append((request, len(context)))
        encoded.append(enc)
    if not ready:
        return answers
    # prompt_logprobs=1: each prompt token's own log-probability plus the top-1 (greedy check).
    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
    outputs = llm.generate([{"prompt_token_ids": list(enc["input_ids"])} for enc in encoded], params,
                           use_tqdm=False)
    for (request, boundary), enc, output in zip(ready, encoded, outputs, strict=True):
        ids = list(enc["input_ids"])
        logprobs, tops = [], []
        for position, entry in enumerate(output.prompt_logprobs):
            if entry is None:
                logprobs.append(None)
                tops.append(None)
                continue
            logprobs.append(entry[ids[position]].logprob)
            tops.append(max(item.logprob for item in entry.values()))
        starts = [start for start, _ in enc["offset_mapping"]]
        total, count, greedy = score_span(logprobs, starts, boundary, tops)
        answers[request.id] = EvalResponse(request.id, logprob=total, num_tokens=count, is_greedy=greedy)
    return answers


class OfflineTarget:
    """A checkpoint/HF directory evaluated with vLLM engines in a Ray Data actor pool."""

    kind = "checkpoint"

    def __init__(self, model: ModelConfig, cfg: EvalConfig):
        self.model = model
        self.cfg = cfg
        self.settings = EngineSettings.from_config(cfg)

    def run(self, requests: list[EvalRequest]) -> dict[str, EvalResponse]:
        import ray.data  # here: Ray only when an offline run starts

        if not requests:
            return {}
        # Sorted by kind so most batches hold one kind and go to the engine in one call.
        ordered = sorted(requests, key=lambda r: (r.kind, r.is_chat))
        dataset = ray.data.from_items([{"request": r.to_json()} for r in ordered])
        resources = {"num_cpus": self.cfg.cpus_per_replica}
        if self.cfg.gpus_per_replica:
            resources["num_gpus"] = self.cfg.gpus_per_replica
        answered = dataset.map_batches(
            VLLMPredictor,
            fn_constructor_kwargs={"model": self.model, "settings": self.settings},
            batch_size=self.cfg.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.cfg.num_replicas),
            **resources,
        )
        log.info("offline eval: %d requests on %d vLLM replica(s)", len(ordered), self.cfg.num_replicas)
        responses = [EvalResponse.from_json(row["response"]) for row in answered.take_all()]
        return {r.id: r for r in responses}
