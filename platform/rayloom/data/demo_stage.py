"""The demo's data stage: build the offline corpus and run the pipeline for each of its parts."""

from __future__ import annotations

import dataclasses

from rayloom import storage
from rayloom.config import RayloomConfig

PARTS = ("pretrain", "sft", "preference")
# The generated preference pairs are under 40 tokens; padding each side to the pre-training
# seq_len (256) would make every alignment step several times slower for nothing.
PREFERENCE_SEQ_LEN = 64


def stage_data(cfg: RayloomConfig, state) -> None:
    """Pre-training text, chat SFT and preference shards -> state.pretrain_data/sft_data/preference_data."""
    from rayloom.data.demo_corpus import demo_eval_uri
    from rayloom.data.pipeline import run_data_job

    outputs = {}
    for part in PARTS:
        data = dataclasses.replace(
            cfg.data, demo=part, name=f"{cfg.data.name}-{part}",
            output=storage.join(cfg.data.output, part) if cfg.data.output else "",
            seq_len=min(cfg.data.seq_len, PREFERENCE_SEQ_LEN) if part == "preference" else cfg.data.seq_len,
        )
        result = run_data_job(dataclasses.replace(cfg, data=data))
        manifest = result.manifest
        outputs[part] = {
            "output": result.output,
            "train_rows": manifest["splits"]["train"]["rows"],
            "validation_rows": manifest["splits"]["validation"]["rows"],
            "tokens": (manifest["tokens"] or {}).get("real"),
            "content_hash": manifest["content_hash"],
        }
    state.pretrain_data = outputs["pretrain"]["output"]
    state.sft_data = outputs["sft"]["output"]
    state.preference_data = outputs["preference"]["output"]
    state.summary["data"] = outputs
    # Held-out prompts + answers of the generated tasks, for evaluation (also demo_eval_examples()).
    state.summary["demo_eval"] = demo_eval_uri(cfg)
    print(f"  held-out demo tasks for evaluation: {demo_eval_uri(cfg)}")
