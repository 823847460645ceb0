"""The main job (`rayloom run` / `make demo`): chain every built stage on the tiny model.

Each stage is a small function over the typed config and a shared `DemoState` (paths produced by
earlier stages). A stage whose capability is not built yet is reported and skipped, never faked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.errors import NotBuiltError

log = logging.getLogger(__name__)


@dataclass
class DemoState:
    model_dir: Path | None = None
    summary: dict[str, object] = field(default_factory=dict)


def stage_model(cfg: RayloomConfig, state: DemoState) -> None:
    from rayloom.models import load_model, load_tokenizer, resolve_model_dir

    state.model_dir = resolve_model_dir(cfg.model)
    tokenizer = load_tokenizer(state.model_dir)
    model = load_model(state.model_dir, cfg.model.dtype)
    num_params = sum(p.numel() for p in model.parameters())
    sample = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                           tokenize=False, add_generation_prompt=True)
    print(f"model: {cfg.model.name} at {state.model_dir}")
    print(f"  {num_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, chat prompt {sample!r}")
    state.summary["model_dir"] = str(state.model_dir)
    state.summary["num_params"] = num_params


def _not_built(issue: str) -> Callable[[RayloomConfig, DemoState], None]:
    def stage(cfg: RayloomConfig, state: DemoState) -> None:
        raise NotBuiltError(issue)

    return stage


STAGES: dict[str, Callable[[RayloomConfig, DemoState], None]] = {
    "model": stage_model,
    "data": _not_built("the Ray Data pipeline (issue #3)"),
    "train": _not_built("distributed pre-training (issue #4)"),
    "sft": _not_built("supervised fine-tuning with LoRA (issue #4)"),
    "align": _not_built("preference alignment (issue #7)"),
    "tune": _not_built("hyperparameter sweeps (issue #8)"),
    "eval": _not_built("evaluation (issue #9)"),
    "serve": _not_built("serving (issue #5)"),
}


def run_main(cfg: RayloomConfig) -> DemoState:
    state = DemoState()
    stages = list(cfg.run.stages)
    if cfg.run.tune and "tune" not in stages:
        stages.insert(stages.index("eval") if "eval" in stages else len(stages), "tune")
    skipped = []
    for name in stages:
        start = time.perf_counter()
        print(f"\n== stage {name} ==")
        try:
            STAGES[name](cfg, state)
        except NotBuiltError as exc:
            print(f"  skipped: {exc} is not built yet")
            skipped.append(name)
            continue
        print(f"  ({time.perf_counter() - start:.1f}s)")
    print(f"\nrayloom run: {len(stages) - len(skipped)} stage(s) ran"
          + (f"; not built yet: {', '.join(skipped)}" if skipped else ""))
    return state
