"""The main job (`rayloom run` / `make demo`): chain every built stage on the tiny model.

Each stage is a function `stage(cfg, state)` over the typed config and the shared `DemoState`,
which carries what earlier stages produced (paths, metrics). A stage whose capability is not
built yet is reported and skipped, never faked. Stage functions live with their capability
(rayloom.data, rayloom.train, ...) and are named in STAGES.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from rayloom.config import RayloomConfig
from rayloom.entry import resolve
from rayloom.errors import NotBuiltError

log = logging.getLogger(__name__)


@dataclass
class DemoState:
    """What the stages hand each other. Paths are local dirs or storage URIs."""

    model_dir: Path | None = None          # base model (HF dir)
    pretrain_data: str | None = None       # shards + manifest of the pre-training corpus
    sft_data: str | None = None            # chat SFT shards
    preference_data: str | None = None     # chosen/rejected shards
    pretrained_dir: str | None = None      # HF dir after pre-training
    sft_dir: str | None = None             # HF dir after SFT (adapters merged)
    adapter_dir: str | None = None         # peft adapter of the SFT run
    aligned_dir: str | None = None         # HF dir after preference alignment
    final_model_dir: str | None = None     # what eval compares against the base and serve hosts
    endpoint_url: str | None = None
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
    state.final_model_dir = str(state.model_dir)
    state.summary["num_params"] = num_params


# stage -> "module:function(cfg, state)"
STAGES: dict[str, str] = {
    "model": "rayloom.demo:stage_model",
    "data": "rayloom.data.demo_stage:stage_data",
    "train": "rayloom.train.demo_stage:stage_pretrain",
    "sft": "rayloom.train.demo_stage:stage_sft",
    "align": "rayloom.align.demo_stage:stage_align",
    "tune": "rayloom.tune.demo_stage:stage_tune",
    "eval": "rayloom.eval.demo_stage:stage_eval",
    "serve": "rayloom.serve.demo_stage:stage_serve",
}

# stage -> what is missing; a line is deleted when its capability lands.
STAGES_NOT_BUILT: dict[str, str] = {
}


def _quiet_libraries() -> None:
    """Library INFO chatter on this console (Ray Data progress lines, Serve deployment dumps, vLLM
    start-up) would bury the stage summaries; warnings and errors still show."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for name in ("ray.data", "ray.serve", "ray.llm", "ray.train", "ray.tune", "vllm"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_main(cfg: RayloomConfig) -> DemoState:
    from rayloom.runtime import ray_session

    state = DemoState()
    if not cfg.cluster.log_to_driver:
        _quiet_libraries()
    stages = list(cfg.run.stages)
    if cfg.run.tune and "tune" not in stages:
        stages.insert(stages.index("eval") if "eval" in stages else len(stages), "tune")
    skipped = []
    with ray_session(cfg.cluster, cfg.storage):
        for name in stages:
            start = time.perf_counter()
            print(f"\n== stage {name} ==", flush=True)
            try:
                if name in STAGES_NOT_BUILT:
                    raise NotBuiltError(STAGES_NOT_BUILT[name])
                resolve(STAGES[name])(cfg, state)
            except NotBuiltError as exc:
                print(f"  skipped: {exc} is not built yet")
                skipped.append(name)
                continue
            print(f"  ({time.perf_counter() - start:.1f}s)", flush=True)
    print(f"\nrayloom run: {len(stages) - len(skipped)} stage(s) ran"
          + (f"; not built yet: {', '.join(skipped)}" if skipped else ""))
    return state
