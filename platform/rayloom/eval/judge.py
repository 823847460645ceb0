"""LLM-as-judge: a model behind any OpenAI-compatible endpoint scores generation outputs on a scale.

The judge sees the question, the reference (when the task has one) and the answer, and replies
with a number; `judge_score` is the mean over the judged examples and `judge_unparsed` the share
of replies without a number on the scale. With `guided_choice` (vLLM / rayloom endpoints) the
reply is constrained to the scale's numbers by structured outputs.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor

from rayloom.config.eval import JudgeConfig
from rayloom.eval import metrics as M
from rayloom.eval.endpoint import endpoint_client, served_model
from rayloom.eval.results import TaskResult

log = logging.getLogger(__name__)

JUDGED_KINDS = ("generate",)


def parse_score(reply: str, low: int, high: int) -> int | None:
    """The first whole number on the scale in the reply ("Score: 4/5" -> 4), else None."""
    for match in re.finditer(r"-?\d+", reply or ""):
        value = int(match.group())
        if low <= value <= high:
            return value
    return None


def judge_results(results: dict[str, TaskResult], cfg: JudgeConfig, timeout_s: float = 120.0,
                  concurrency: int = 8) -> dict[str, dict]:
    """Add judge_score / judge_unparsed to each judged task's metrics; returns a per-task summary."""
    names = cfg.tasks or [name for name, r in results.items() if r.kind in JUDGED_KINDS]
    client = endpoint_client(cfg.endpoint_url, cfg.api_key_env, timeout_s)
    model = served_model(client, cfg.model, cfg.endpoint_url)
    extra = {}
    if cfg.guided_choice:
        extra["extra_body"] = {"structured_outputs": {
            "choice": [str(v) for v in range(cfg.scale_min, cfg.scale_max + 1)]}}

    def ask(record: dict) -> int | None:
        reference = record.get("reference", "")
        prompt = cfg.rubric.format(prompt=record.get("prompt", ""), response=record.get("response", ""),
                                   reference=" | ".join(reference) if isinstance(reference, list) else reference,
                                   scale_min=cfg.scale_min, scale_max=cfg.scale_max)
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=cfg.max_tokens, temperature=0.0, **extra)
        return parse_score(reply.choices[0].message.content or "", cfg.scale_min, cfg.scale_max)

    summary = {}
    for name in names:
        if name not in results:
            continue
        result = results[name]
        judged = [p for p in result.predictions if "response" in p][:cfg.max_examples]
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            scores = list(pool.map(ask, judged))
        for record, score in zip(judged, scores, strict=True):
            record["judge_score"] = score
        valid = [float(s) for s in scores if s is not None]
        result.metrics["judge_score"] = M.mean(valid)
        result.stderr["judge_score"] = M.stderr(valid)
        result.metrics["judge_unparsed"] = (len(scores) - len(valid)) / max(1, len(scores))
        summary[name] = {"judged": len(scores), "parsed": len(valid), "judge_model": model}
        log.info("judge %s: %d answers scored, mean %.3f", name, len(valid), result.metrics["judge_score"])
    return summary
