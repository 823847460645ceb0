"""`rayloom eval`: evaluate a checkpoint or an endpoint, write the run and its report, apply the gate.

eval.mode=run (default): eval.harness.tasks through lm-evaluation-harness (rayloom.eval.harness) on
the target -> metrics.json, predictions, lm-eval's own results and samples (lm_eval/), report.md/html
with plots, optional judge / human-review export, the gate verdict, and the model's entry in the
gate index. eval.mode=compare: a side-by-side report of two runs.
eval.mode=review: import human ratings for an exported sample and report agreement.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from rayloom import storage
from rayloom.config import ModelConfig, RayloomConfig
from rayloom.errors import UserError
from rayloom.eval import harness, store
from rayloom.eval.compare import format_table, write_comparison
from rayloom.eval.endpoint import endpoint_client, served_model
from rayloom.eval.engines import make_ray_vllm
from rayloom.eval.gate import GateFailed, GateResult, evaluate_gate
from rayloom.eval.human_review import REVIEW_KINDS, export_review, import_reviews, review_markdown
from rayloom.eval.judge import judge_results
from rayloom.eval.report import fmt, write_report
from rayloom.eval.results import TaskResult, from_harness
from rayloom.eval.robustness import fold_variants
from rayloom.lineage import read_lineage
from rayloom.models import resolve_model_dir
from rayloom.runtime import ray_session
from rayloom.secret_policy import redact_uri

log = logging.getLogger(__name__)


@dataclass
class EvalRun:
    name: str
    uri: str
    payload: dict
    results: dict[str, TaskResult]
    gate: GateResult | None


def _build_model_config(cfg: RayloomConfig, model_path: str | None = None) -> ModelConfig:
    """The model group, or a path (eval.model_path / the demo's checkpoints) loaded with its settings."""
    path = model_path or cfg.eval.model_path
    if not path:
        return cfg.model
    name = Path(str(path).rstrip("/")).name or cfg.model.name
    return dataclasses.replace(cfg.model, name=name, preset=None, path=str(path))


class _Target:
    """What lm-eval is pointed at: an LM instance (checkpoint) or an API model's (name, args)."""

    def __init__(self, cfg: RayloomConfig, model: ModelConfig):
        ecfg = cfg.eval
        self.kind = ecfg.target
        if self.kind == "endpoint":
            client = endpoint_client(ecfg.endpoint_url, ecfg.api_key_env, ecfg.request_timeout_s)
            self.model = served_model(client, ecfg.endpoint_model, ecfg.endpoint_url)
            self.lm = harness.endpoint_model_args(ecfg, self.model)
        else:
            self.model = model.name
            self.model_dir = str(resolve_model_dir(model)) if model.preset is not None else str(model.path)
            self.lm = None
            self._model, self._cfg = model, ecfg

    def open(self):
        if self.kind == "checkpoint" and self.lm is None:
            self.lm = make_ray_vllm(self._model, self._cfg, self.model_dir)
        return self.lm

    def close(self) -> None:
        if self.kind == "checkpoint" and self.lm is not None:
            self.lm.close()
            self.lm = None


def _model_info(cfg: RayloomConfig, model: ModelConfig, target) -> dict:
    if cfg.eval.target == "endpoint":
        # An endpoint is recorded under eval.model_path when given (what it serves), for the gate.
        key = store.model_key(cfg.eval.model_path) if cfg.eval.model_path else None
        # Stored in the run and its report: credentials in the URL (user:pw@, ?token=) are redacted.
        return {"name": target.model, "path": cfg.eval.model_path or redact_uri(cfg.eval.endpoint_url), "key": key,
                "lineage": read_lineage(cfg.eval.model_path) if cfg.eval.model_path else None}
    if model.preset is not None:
        path = str(resolve_model_dir(model))
    else:
        path = str(model.path)
    # The evaluated model's lineage id lets the deploy gate notice a model retrained in place.
    return {"name": model.name, "path": path, "key": store.model_key(path), "lineage": read_lineage(path)}


def evaluate(cfg: RayloomConfig, *, model_path: str | None = None, run_name: str | None = None,
             label: str | None = None, output: str | None = None, record: bool = True) -> EvalRun:
    """Evaluate one model (eval.target) on eval.tasks and probes; write and return the run."""
    check_ready(cfg)
    ecfg = cfg.eval
    manager = harness.task_manager(ecfg)
    tasks_loaded = harness.load_tasks(ecfg, manager)
    model = _build_model_config(cfg, model_path)
    target = _Target(cfg, model)
    info = _model_info(cfg, model, target)
    if label:
        info["label"] = label
    name = run_name or ecfg.run_name or store.default_run_name(label or info["name"])
    uri = output or ecfg.output or storage.join(store.eval_root(cfg.storage), "runs", name)
    storage.check_writable(uri)  # (run_eval_job checked a named one before Ray started)
    start = time.perf_counter()
    try:
        lm_out = harness.run_harness(ecfg, target.open(), tasks_loaded, api_key_env=ecfg.api_key_env)
    finally:
        target.close()
    seconds = time.perf_counter() - start
    results = fold_variants(from_harness(lm_out.results, lm_out.samples), ecfg.robustness)
    extras: dict = {}
    if ecfg.judge.enabled:
        extras["judge"] = judge_results(results, ecfg.judge, ecfg.request_timeout_s, ecfg.num_concurrent_requests)
    tasks = {task: r.summary() for task, r in results.items()}
    flat = {f"{task}/{metric}": value for task, s in tasks.items() for metric, value in s["metrics"].items()}
    gate = None if ecfg.gate.is_empty else evaluate_gate(flat, ecfg.gate, run=uri)
    payload = {
        "format": store.FORMAT, "run": name, "created": store.now_iso(), "model": info,
        "target": {"kind": target.kind, "endpoint_url": redact_uri(ecfg.endpoint_url) if target.kind == "endpoint" else ""},
        "engine": {"name": "lm-evaluation-harness", "version": lm_out.results.get("lm_eval_version", ""),
                   "n-shot": lm_out.results.get("n-shot", {}), "replicas": ecfg.num_replicas
                   if target.kind == "checkpoint" else None},
        "num_examples": sum(r.num_examples for r in results.values()), "seconds": round(seconds, 2), "tasks": tasks, "metrics": flat,
        "gate": gate.to_dict() if gate else None, **extras,
        "config": OmegaConf.to_container(OmegaConf.structured(ecfg)),
    }
    predictions = {task: r.predictions for task, r in results.items()}
    if ecfg.human_review.export:
        payload["human_review"] = {"dir": storage.join(uri, "review"), "num_items": 0}

    def extra(local: Path) -> None:
        store.write_harness_output(local, lm_out.results, lm_out.samples)
        if ecfg.human_review.export:
            hr = ecfg.human_review
            chosen = {t: p for t, p in predictions.items()
                      if (t in hr.tasks if hr.tasks else results[t].kind in REVIEW_KINDS)}
            exported = export_review({name: chosen}, str(local / "review"), num_items=hr.num_items,
                                     seed=ecfg.seed, formats=hr.formats, scale=(hr.scale_min, hr.scale_max))
            payload["human_review"]["num_items"] = exported["num_items"]
            (local / store.METRICS_FILE).write_text(_dumps(payload))
        write_report(payload, local, with_plots=ecfg.plots)

    uri = store.write_run(uri, payload, predictions, extra)
    payload["uri"] = uri
    if record and info.get("key"):
        store.record_latest(store.eval_root(cfg.storage), info["key"], uri)
    log.info("eval run %s written to %s", name, uri)
    return EvalRun(name, uri, payload, results, gate)


def _dumps(payload: dict) -> str:
    return json.dumps(payload, indent=2)


def _summary_table(payload: dict) -> str:
    rows = [(task, metric, fmt(value), fmt(s.get("stderr", {}).get(metric)) if metric in s.get("stderr", {}) else "")
            for task, s in payload["tasks"].items() for metric, value in s["metrics"].items()]
    width = max([len("task/metric"), *(len(f"{t}/{m}") for t, m, _, _ in rows)])
    lines = [f"{'task/metric':<{width}}  {'value':>10}  {'stderr':>8}"]
    lines += [f"{t + '/' + m:<{width}}  {v:>10}  {e:>8}" for t, m, v, e in rows]
    return "\n".join(lines)


def run_eval_job(cfg: RayloomConfig):
    ecfg = cfg.eval
    if ecfg.mode == "compare":
        before, after = (store.load_run(uri) for uri in ecfg.compare_runs)
        out = ecfg.output or storage.join(store.eval_root(cfg.storage), "compare",
                                          f"{before['run']}__vs__{after['run']}")
        written = write_comparison(before, after, out)
        print(format_table(written["rows"], (before["run"], after["run"])))
        print(f"\ncomparison written to {written['uri']} (compare.html, compare.md, compare.json)")
        return written
    if ecfg.mode == "review":
        report = import_reviews(ecfg.human_review.key, list(ecfg.human_review.ratings), ecfg.human_review.kappa_weights)
        print(review_markdown(report))
        return report
    if ecfg.output or ecfg.run_name:  # a folder rayloom did not write: refused before the evaluation, not after
        storage.check_writable(ecfg.output or storage.join(store.eval_root(cfg.storage), "runs", ecfg.run_name))
    if ecfg.target == "checkpoint":
        with ray_session(cfg.cluster, cfg.storage):
            run = evaluate(cfg)
    else:
        run = evaluate(cfg)
    print(_summary_table(run.payload))
    print(f"\neval run written to {run.uri} (report.html, report.md, metrics.json)")
    if ecfg.human_review.export:
        print(f"human review sample: {run.payload['human_review']['dir']} (items.csv / items.jsonl for raters)")
    if ecfg.compare_with:
        before = store.load_run(ecfg.compare_with)
        out = storage.join(store.eval_root(cfg.storage), "compare", f"{before['run']}__vs__{run.name}")
        written = write_comparison(before, run.payload, out)
        print("\n" + format_table(written["rows"], (before["run"], run.name)))
        print(f"comparison written to {written['uri']}")
    if run.gate is not None:
        print(run.gate.message)
        if not run.gate.passed and ecfg.gate.fail_job:
            raise GateFailed(run.gate.message)
    return run


def check_ready(cfg: RayloomConfig) -> None:
    """Fail early on config that cannot work, before engines start (used by the demo stage too)."""
    harness.require_lm_eval()
    if cfg.eval.target == "endpoint" and not cfg.eval.endpoint_url:
        raise UserError("eval.target=endpoint needs eval.endpoint_url")
