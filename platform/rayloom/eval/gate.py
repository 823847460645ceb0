"""The deploy gate: thresholds from eval.gate checked against a model's latest evaluation.

For `rayloom serve` (serve.enforce_gate=true)::

    from rayloom.eval import check_deploy_gate
    check_deploy_gate(cfg)   # raises GateFailed unless the served model's latest evaluation passes

`check_gate(model_dir_or_run, gate_cfg)` returns a GateResult without raising. A model directory is
looked up in the eval index (its latest run); an eval run directory is checked directly. A model
with no evaluation fails a non-empty gate: nothing shows that it passes.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

from rayloom.config import StorageConfig
from rayloom.config.eval import GateConfig
from rayloom.errors import UserError
from rayloom.eval import store
from rayloom.lineage import read_lineage
from rayloom.models import resolve_model_dir

log = logging.getLogger(__name__)


class GateFailed(UserError):
    """The model's evaluation does not meet eval.gate; the message lists the failing metrics."""


@dataclass(frozen=True)
class GateFailure:
    metric: str
    value: float | None
    threshold: float
    op: str  # ">=" (eval.gate.min) or "<=" (eval.gate.max)

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.metric}: missing from the evaluation (needs {self.op} {self.threshold:g})"
        return f"{self.metric} = {self.value:.4g} (needs {self.op} {self.threshold:g})"


@dataclass
class GateResult:
    passed: bool
    run: str | None
    failures: list[GateFailure] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def message(self) -> str:
        if self.passed:
            return f"deploy gate passed ({len(self.checked)} metric(s) checked, run {self.run})"
        if self.reason:
            return f"deploy gate failed: {self.reason}"
        listed = "; ".join(str(f) for f in self.failures)
        return f"deploy gate failed for eval run {self.run}: {listed}"

    def raise_if_failed(self) -> GateResult:
        if not self.passed:
            raise GateFailed(self.message)
        return self

    def to_dict(self) -> dict:
        return {"passed": self.passed, "run": self.run, "checked": self.checked, "reason": self.reason,
                "failures": [{"metric": f.metric, "value": f.value, "threshold": f.threshold, "op": f.op}
                             for f in self.failures]}


def _as_gate_config(gate: GateConfig | dict) -> GateConfig:
    """A GateConfig from the typed config or a plain dict ({"min": ..., "max": ...}, or the flat
    form {"metric": low, "max:metric": high})."""
    if isinstance(gate, GateConfig):
        return gate
    if not isinstance(gate, dict):
        raise UserError(f"eval.gate must be a mapping, not {type(gate).__name__}")
    if set(gate) <= {"min", "max", "missing_fails", "fail_job"}:
        return GateConfig(**gate)
    low = {k: float(v) for k, v in gate.items() if not k.startswith("max:")}
    high = {k[4:]: float(v) for k, v in gate.items() if k.startswith("max:")}
    return GateConfig(min=low, max=high)


def evaluate_gate(metrics: dict[str, float], gate: GateConfig | dict, run: str | None = None) -> GateResult:
    gate = _as_gate_config(gate)
    failures, checked = [], []
    for op, thresholds in ((">=", gate.min), ("<=", gate.max)):
        for metric, threshold in sorted(thresholds.items()):
            checked.append(metric)
            value = metrics.get(metric)
            if value is None:
                if gate.missing_fails:
                    failures.append(GateFailure(metric, None, float(threshold), op))
                else:
                    log.warning("deploy gate: %s is not in the evaluation; skipped (eval.gate.missing_fails=false)",
                                metric)
                continue
            value = float(value)
            ok = not math.isnan(value) and (value >= threshold if op == ">=" else value <= threshold)
            if not ok:
                failures.append(GateFailure(metric, value, float(threshold), op))
    return GateResult(passed=not failures, run=run, failures=failures, checked=checked)


def check_gate(model_dir_or_run: str | os.PathLike, gate_cfg: GateConfig | dict, *,
               eval_root: str | None = None) -> GateResult:
    """Check a model's latest evaluation (or an eval run directory) against the gate."""
    gate = _as_gate_config(gate_cfg)
    target = str(model_dir_or_run)
    if store.is_run(target):
        run = target
    else:
        root = eval_root or store.eval_root(_default_storage())
        run = store.latest_run_for(root, target)
        if run is None:
            if gate.is_empty:
                return GateResult(passed=True, run=None, reason="")
            return GateResult(passed=False, run=None, reason=(
                f"no evaluation of {target} was found under {root}: run `rayloom eval eval.model_path={target}` "
                "first (or point at an eval run directory)"))
    payload = store.load_run(run)
    if not store.is_run(target):
        stale = _stale_evaluation_reason(target, payload, run)
        if stale:
            return GateResult(passed=False, run=run, reason=stale)
    return evaluate_gate(payload.get("metrics", {}), gate, run=run)


def _stale_evaluation_reason(model_dir: str, payload: dict, run: str) -> str:
    """Why the latest evaluation does not describe the model now at `model_dir` ('' when it does):
    the lineage id beside the model changed since (retrained or re-exported in place)."""
    current = read_lineage(model_dir)
    evaluated = (payload.get("model") or {}).get("lineage")
    if current is None or (evaluated or {}).get("id") == current.get("id"):
        return ""
    measured = evaluated.get("id") if evaluated else "a model without lineage"
    return (f"{model_dir} changed after its last evaluation ({run}): lineage id {current.get('id')} "
            f"(run {current.get('run')}) was not evaluated (that run measured {measured}); "
            f"run `rayloom eval eval.model_path={model_dir}` again")


def enforce_gate(model_dir_or_run: str | os.PathLike, gate_cfg: GateConfig | dict, *,
                 eval_root: str | None = None) -> GateResult:
    """check_gate, raising GateFailed (a UserError: `rayloom serve` exits 2) when the gate fails."""
    return check_gate(model_dir_or_run, gate_cfg, eval_root=eval_root).raise_if_failed()


def _default_storage():
    return StorageConfig()


def _deploy_model_ref(cfg) -> str:
    """The model `rayloom serve` would deploy, named as the eval index names it."""
    if cfg.serve.model_path:
        return cfg.serve.model_path
    if cfg.model.path:
        return cfg.model.path
    return str(resolve_model_dir(cfg.model))


def check_deploy_gate(cfg) -> GateResult:
    """For `rayloom serve` with serve.enforce_gate=true: raise GateFailed unless the served model's
    latest evaluation (under <storage.root>/eval) passes eval.gate; the message lists what failed."""
    model = _deploy_model_ref(cfg)
    if _as_gate_config(cfg.eval.gate).is_empty:
        log.warning("serve.enforce_gate=true but eval.gate sets no thresholds: nothing to enforce")
    result = enforce_gate(model, cfg.eval.gate, eval_root=store.eval_root(cfg.storage))
    log.info("%s", result.message)
    return result
