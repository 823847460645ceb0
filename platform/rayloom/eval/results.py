"""A task's outcome: its metrics (with standard errors), per-example predictions and plot data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskResult:
    task: str
    kind: str
    num_examples: int
    metrics: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)
    num_errors: int = 0
    # One record per example (prompt, response, reference, per-example scores): predictions/<task>.jsonl.
    predictions: list[dict] = field(default_factory=list)
    # Data for plots and tables: calibration bins, per-category bias gaps, robustness breakdown.
    details: dict = field(default_factory=dict)
    description: str = ""

    def summary(self) -> dict:
        return {"kind": self.kind, "description": self.description, "num_examples": self.num_examples,
                "num_errors": self.num_errors, "metrics": self.metrics, "stderr": self.stderr,
                "details": self.details}


# lm-eval's output types -> the kinds the report, judge and human review know.
KIND_OF_OUTPUT = {"generate_until": "generate", "multiple_choice": "multiple_choice",
                  "loglikelihood": "loglikelihood", "loglikelihood_rolling": "perplexity"}


def metric_name(key: str) -> tuple[str, bool]:
    """lm-eval's "acc,none" -> ("acc", False); "acc_stderr,none" -> ("acc", True); other filters get a suffix."""
    name, _, filt = key.partition(",")
    stderr = name.endswith("_stderr")
    if stderr:
        name = name[: -len("_stderr")]
    return (name if filt in ("", "none") else f"{name}_{filt}"), stderr


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) and not hasattr(value, "item"):
        return None
    return float(value)


def from_harness(results: dict, samples: dict[str, list[dict]]) -> dict[str, TaskResult]:
    """lm-eval's results + samples -> one TaskResult per task (metrics, stderr, a prediction per sample)."""
    out = {}
    configs = results.get("configs", {})
    counts = results.get("n-samples", {})
    for task, values in results.get("results", {}).items():
        metrics, stderr = {}, {}
        for key, value in values.items():
            if "," not in key:
                continue
            number = _number(value)
            if number is None:
                continue
            name, is_stderr = metric_name(key)
            (stderr if is_stderr else metrics)[name] = number
        config = configs.get(task, {})
        kind = KIND_OF_OUTPUT.get(config.get("output_type", ""), config.get("output_type", "lm_eval"))
        records = [_prediction(task, s) for s in samples.get(task, [])]
        num = counts.get(task, {}).get("effective", len(records))
        out[task] = TaskResult(task, kind, int(num), metrics, stderr, 0, records,
                               description=str(config.get("description", "")).strip()[:200] or "lm-eval task")
    return out


def _prediction(task: str, sample: dict) -> dict:
    arguments = sample.get("arguments") or [()]
    first = arguments[0] if isinstance(arguments, list | tuple) and arguments else ()
    prompt = first[0] if isinstance(first, list | tuple) and first else ""
    response = sample.get("filtered_resps")
    if isinstance(response, list) and len(response) == 1:
        response = response[0]
    record = {"id": f"{task}#{sample.get('doc_id')}", "prompt": prompt, "reference": sample.get("target"),
              "doc": sample.get("doc")}
    if isinstance(response, str):
        record["response"] = response
    else:
        record["scores"] = response
    for name in sample.get("metrics", []):
        if name in sample:
            record[name] = sample[name]
    return record
