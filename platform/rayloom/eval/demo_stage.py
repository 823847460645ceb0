"""Demo stage `eval`: the base model and the fine-tuned one on the demo's checkable tasks, before -> after.

Both runs use eval.tasks (by default the held-out examples of the demo corpus: add, next, upper,
repeat, checked by exact match) on the offline target, one vLLM engine load per model, inside
`rayloom run`'s Ray session. The side-by-side report lands under <storage.root>/eval/compare/.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from rayloom import storage
from rayloom.config import RayloomConfig
from rayloom.eval import store

log = logging.getLogger(__name__)


def _same_model(a, b) -> bool:
    return store.model_key(str(a)) == store.model_key(str(b))


def stage_eval(cfg: RayloomConfig, state) -> None:
    from rayloom.eval.compare import format_table, write_comparison
    from rayloom.eval.generation import primary_metric
    from rayloom.eval.runner import evaluate
    from rayloom.eval.tasks import load_task_registry

    base, tuned = state.model_dir, state.final_model_dir
    if base is None:
        print("  skipped: no base model (the model stage did not run)")
        return
    if not tuned or _same_model(base, tuned):
        print("  skipped: no fine-tuned model yet (the training stages produced none), so there is nothing to "
              "compare against the base model")
        return
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    runs = storage.join(store.eval_root(cfg.storage), "runs")
    before = evaluate(cfg, model_path=str(base), run_name=f"demo-{stamp}-base", label="base",
                      output=storage.join(runs, f"demo-{stamp}-base"))
    after = evaluate(cfg, model_path=str(tuned), run_name=f"demo-{stamp}-tuned", label="fine-tuned",
                     output=storage.join(runs, f"demo-{stamp}-tuned"))
    out = storage.join(store.eval_root(cfg.storage), "compare", f"demo-{stamp}")
    written = write_comparison(before.payload, after.payload, out, labels=("base", "fine-tuned"))
    registry = load_task_registry(cfg.eval.task_dirs)
    # The headline rows: each task's primary metric; every metric is in the report.
    headline = [f"{task}/{primary_metric(registry.get(task))}" for task in cfg.eval.tasks
                if registry.get(task).kind in ("generate", "multiple_choice")]
    headline += [f"{t}/perplexity" for t in cfg.eval.tasks if registry.get(t).kind == "perplexity"]
    rows = [r for r in written["rows"] if r["metric"] in headline]
    print("  " + format_table(rows, ("base", "fine-tuned")).replace("\n", "\n  "))
    improved = [r["metric"] for r in rows if r["verdict"] == "better"]
    not_improved = [r["metric"] for r in rows if r["verdict"] != "better"]
    if not_improved:
        print(f"  not improved: {', '.join(not_improved)}")
    print(f"  reports: {before.uri}, {after.uri}; side by side: {written['uri']}/compare.html")
    if after.gate is not None:
        print(f"  {after.gate.message}")
    state.summary["eval"] = {"base_run": before.uri, "tuned_run": after.uri, "compare": written["uri"],
                             "improved": improved, "not_improved": not_improved,
                             "rows": {r["metric"]: {"base": r["before"], "fine-tuned": r["after"]} for r in rows}}
