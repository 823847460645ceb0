"""Evaluation: a checkpoint or any OpenAI-compatible endpoint on tasks and probes, a report, a deploy gate.

- `evaluate(cfg, model_path=...) -> EvalRun`: one evaluation run (metrics, predictions, report, gate)
- `run_eval_job(cfg)`: the `rayloom eval` job (eval.mode=run | compare | review)
- `check_deploy_gate(cfg) -> GateResult` (raises `GateFailed`): what `rayloom serve` enforces
- stored runs: `eval_root(storage_cfg)`, `model_key(path)`, `load_run(uri)`, `latest_run_for(root, path)`
- comparing runs: `write_comparison(before, after, out_uri)`, `format_table(rows)`
- tasks: `load_task_registry(dirs)`, `primary_metric(spec)`

Importing this package imports neither Ray nor vLLM.
"""

from rayloom.eval.compare import format_table, write_comparison
from rayloom.eval.gate import GateFailed, GateResult, check_deploy_gate, check_gate
from rayloom.eval.generation import primary_metric
from rayloom.eval.runner import EvalRun, evaluate, run_eval_job
from rayloom.eval.store import eval_root, latest_run_for, load_run, model_key
from rayloom.eval.tasks import load_task_registry

__all__ = [
    "EvalRun", "GateFailed", "GateResult", "check_deploy_gate", "check_gate", "eval_root", "evaluate",
    "format_table", "latest_run_for", "load_run", "load_task_registry", "model_key", "primary_metric",
    "run_eval_job", "write_comparison",
]
