"""The main job's sweep stage (`rayloom run run.tune=true`): a small ASHA sweep of short
pre-training runs of the tiny model on the demo shards, one Ray Train worker per trial.

It prints the trial table (which trials ASHA stopped) and the best learning rate, and leaves the
best config as an experiment YAML in the sweep directory. Without shards it says so and skips.
"""

from __future__ import annotations

import dataclasses

from rayloom.config import DeepSpeedConfig, PeftConfig, RayloomConfig, TuneConfig

# Demo-sized trials: the tiny model trains 16 steps with an evaluation every 4, so ASHA can stop a
# lagging trial after its first evaluation. Two trials run at once (4 logical CPUs).
DEMO_TUNE = TuneConfig(
    name="demo-asha", scheduler="asha", search_alg="random", num_samples=4, max_concurrent_trials=2,
    grace_period=1, reduction_factor=2, num_reports=4, on_existing="overwrite",
    space={"train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
           "train.warmup_steps": {"type": "choice", "values": [0, 4]}},
)
DEMO_STEPS = 16


def demo_tune_config(cfg: RayloomConfig) -> RayloomConfig:
    """cfg with the demo sweep and demo-sized trials: full pre-training (clm, no adapters) of
    cfg.model with ZeRO-1 and one worker, so two trials fit the embedded Ray at once."""
    train = dataclasses.replace(cfg.train, num_workers=1, max_steps=DEMO_STEPS, warmup_steps=0,
                                micro_batch_size=min(cfg.train.micro_batch_size, 4), eval_batches=2)
    return dataclasses.replace(cfg, tune=DEMO_TUNE, train=train, peft=PeftConfig(),
                               deepspeed=DeepSpeedConfig(zero_stage=1),
                               objective=dataclasses.replace(cfg.objective, name="clm"))


def stage_tune(cfg: RayloomConfig, state) -> None:
    from rayloom.tune.sweep import sweep

    if not cfg.run.tune:
        print("  skipped: run.tune=false (add run.tune=true to include a small sweep)")
        return
    if state.pretrain_data is None:
        print("  skipped: no pre-training shards (the data stage did not produce state.pretrain_data)")
        return
    run_cfg = demo_tune_config(cfg)
    tune = run_cfg.tune
    print(f"  {tune.scheduler.upper()} sweep {tune.name!r}: {tune.num_samples} trials of {run_cfg.model.name} "
          f"({run_cfg.train.max_steps} steps, an evaluation every {run_cfg.train.max_steps // tune.num_reports}), "
          f"{tune.max_concurrent_trials} at a time, over {', '.join(tune.space)}", flush=True)
    result = sweep(run_cfg, data_output=state.pretrain_data)
    print("  " + result.render().replace("\n", "\n  "))
    state.summary["tune"] = {"best_values": result.best_values, "best_metric": result.best_metric,
                             "best_checkpoint": result.best_checkpoint, "best_config": result.best_config_path,
                             "trial_steps": result.total_steps,
                             "stopped_early": sum(t.status == "stopped early" for t in result.trials)}
