"""Evaluation: a checkpoint or any OpenAI-compatible endpoint on lm-evaluation-harness tasks, a report, a deploy gate.

- `evaluate(cfg, model_path=...) -> EvalRun`: one evaluation run (lm-eval results and samples, report, gate)
- `run_eval_job(cfg)`: the `rayloom eval` job (eval.mode=run | compare | review)
- `check_deploy_gate(cfg) -> GateResult` (raises `GateFailed`): what `rayloom serve` enforces
- stored runs: `eval_root(storage_cfg)`, `model_key(path)`, `load_run(uri)`, `latest_run_for(root, path)`
- comparing runs: `write_comparison(before, after, out_uri)`, `format_table(rows)`, `headline_metrics(run)`
- tasks: lm-eval task YAMLs in conf/tasks/ (`tasks_dir()`), run by hand with
  `lm_eval --include_path conf/tasks --tasks demo_add ...`

Importing this package imports neither Ray, vLLM nor lm-eval.
"""

from rayloom.eval.compare import format_table, headline_metrics, write_comparison
from rayloom.eval.gate import GateFailed, GateResult, check_deploy_gate, check_gate
from rayloom.eval.harness import tasks_dir
from rayloom.eval.runner import EvalRun, evaluate, run_eval_job
from rayloom.eval.store import eval_root, latest_run_for, load_run, model_key

__all__ = [
    "EvalRun", "GateFailed", "GateResult", "check_deploy_gate", "check_gate", "eval_root", "evaluate",
    "format_table", "headline_metrics", "latest_run_for", "load_run", "model_key", "run_eval_job", "tasks_dir",
    "write_comparison",
]
