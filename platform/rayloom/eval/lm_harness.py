"""Optional: EleutherAI's lm-evaluation-harness against the served endpoint (`local-completions`).

lm-eval is not a rayloom dependency: it is imported only when eval.lm_eval.tasks is set, and its
absence is a clear error, never a silent skip. Its tasks usually download data sets from the
Hugging Face hub, so they need network access (or a warm HF datasets cache).
"""

from __future__ import annotations

import logging
import os

from rayloom.config import EvalConfig
from rayloom.errors import UserError
from rayloom.openai_client import NO_KEY, api_base

log = logging.getLogger(__name__)

INSTALL_HINT = ("lm-evaluation-harness is not installed: `pip install 'lm-eval[api]'` into rayloom's environment "
                "to run eval.lm_eval.tasks, or leave eval.lm_eval.tasks empty")


def require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return lm_eval


def run_lm_eval(cfg: EvalConfig, model: str) -> dict[str, dict[str, float]]:
    """{"lm_eval:<task>": {metric: value}} from lm-eval's simple_evaluate over the endpoint."""
    if cfg.target != "endpoint":
        raise UserError("eval.lm_eval.tasks runs lm-evaluation-harness against an endpoint: set eval.target=endpoint "
                        "and eval.endpoint_url (e.g. the rayloom endpoint of `rayloom serve`)")
    lm_eval = require_lm_eval()
    base = api_base(cfg.endpoint_url)
    args = {"model": model, "base_url": f"{base}/completions", "num_concurrent": cfg.num_concurrent_requests,
            "max_retries": 3, "tokenized_requests": False}
    if cfg.tokenizer:
        args.update(tokenizer_backend="huggingface", tokenizer=cfg.tokenizer)
    model_args = ",".join(f"{k}={v}" for k, v in args.items())
    # lm-eval's API models read the key from OPENAI_API_KEY; set for this call only.
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = os.environ.get(cfg.api_key_env) or NO_KEY
    try:
        log.info("lm-eval: %s against %s", ", ".join(cfg.lm_eval.tasks), base)
        output = lm_eval.simple_evaluate(model="local-completions", model_args=model_args,
                                         tasks=list(cfg.lm_eval.tasks), num_fewshot=cfg.lm_eval.num_fewshot,
                                         limit=cfg.lm_eval.limit)
    finally:
        if saved is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = saved
    return flatten_results((output or {}).get("results", {}))


def flatten_results(results: dict) -> dict[str, dict[str, float]]:
    """lm-eval's {"task": {"acc,none": 0.5, "acc_stderr,none": ...}} -> {"lm_eval:task": {"acc": 0.5}}."""
    out = {}
    for task, values in results.items():
        metrics = {}
        for key, value in values.items():
            name, _, filt = key.partition(",")
            if not isinstance(value, int | float) or isinstance(value, bool) or name.endswith("_stderr"):
                continue
            metrics[name if filt in ("", "none") else f"{name}_{filt}"] = float(value)
        out[f"lm_eval:{task}"] = metrics
    return out
