"""The demo recipe's configs: each stage's settings come from conf/run/demo.yaml, the command line's
overrides reach every stage and win, `rayloom config run` shows them, and the run's stage list is
checked while composing. No Ray: only composition."""

from __future__ import annotations

import dataclasses
import io
import logging

import pytest

from rayloom.config import compose, to_yaml
from rayloom.errors import UserError
from rayloom.recipes import DemoState, stage_config, stage_configs
from rayloom.recipes.console import QuietConsole, _RayletLinesToLog
from rayloom.recipes.demo_training import print_loss_curve, starting_from
from rayloom.tune.sweep import check_space_values

ALL_STAGES = "run.stages=[model,data,train,sft,align,rl,tune,eval,serve]"


def _run_cfg(*overrides: str):
    """What rayloom.config.compose gives the CLI: the run config with its overrides recorded."""
    cfg = compose("run", list(overrides))
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, overrides=list(overrides)))


def test_stage_settings_are_the_demos_measured_ones():
    configs = stage_configs(_run_cfg(ALL_STAGES))
    pre, sft, align, tune = configs.train, configs.sft, configs.align, configs.tune
    assert (pre.deepspeed.zero_stage, pre.deepspeed.offload_optimizer) == (2, "cpu")
    assert pre.objective.name == "clm" and pre.peft.method == "none" and pre.train.num_workers == 2
    assert (pre.train.lr, pre.train.max_steps, pre.train.run_name) == (1e-3, 100, "demo-pretrain")
    # SFT: a full fine-tune at train.lr for 4x the pre-training steps, without offload.
    assert sft.objective.name == "sft" and sft.peft.method == "none" and sft.deepspeed.offload_optimizer == "none"
    assert (sft.train.lr, sft.train.max_steps) == (pre.train.lr, 4 * pre.train.max_steps)
    assert sft.train.checkpoint_every <= sft.train.max_steps
    # Align: LoRA DPO at 1e-4.
    assert align.objective.name == "dpo" and align.objective.resolved_loss_type == "sigmoid"
    assert (align.peft.method, align.peft.r, align.peft.alpha, align.peft.dropout) == ("lora", 8, 16, 0.0)
    assert align.train.lr == 1e-4 and align.train.run_name == "demo-align" and align.train.export
    # RL: GRPO of the aligned model, one worker with its colocated vLLM engine, exact-match + format rewards.
    rl = configs.rl
    assert rl.objective.name == "grpo" and rl.peft.method == "none" and rl.train.num_workers == 1
    assert rl.objective.grpo.rewards == ["rayloom.align.rewards.exact_match", "rayloom.align.rewards.format_reward"]
    assert rl.objective.grpo.placement == "colocated" and rl.objective.grpo.num_generations == 8
    assert (rl.train.lr, rl.train.max_steps, rl.train.run_name) == (2e-5, 40, "demo-rl")
    # Tune: 4 ASHA trials of 16 one-worker ZeRO-1 steps, two at a time.
    assert (tune.tune.name, tune.tune.scheduler, tune.tune.num_samples, tune.tune.max_concurrent_trials) == \
        ("demo-asha", "asha", 4, 2)
    assert tune.train.num_workers == 1 and tune.deepspeed.zero_stage == 1 and tune.objective.name == "clm"
    assert tune.train.max_steps == 16 and tune.train.max_steps % tune.tune.num_reports == 0
    assert tune.tune.space["train.lr"] == {"type": "loguniform", "low": 1e-5, "high": 1e-2}
    assert tune.tune.space["train.warmup_steps"] == {"type": "choice", "values": [0, 4]}
    check_space_values(tune)
    # Data: three parts under their own names; the short preference pairs at seq_len 64.
    assert {part: (c.data.demo, c.data.name, c.data.seq_len) for part, c in configs.data.items()} == {
        "pretrain": ("pretrain", "demo-pretrain", 256), "sft": ("sft", "demo-sft", 256),
        "preference": ("preference", "demo-preference", 64)}
    # SFT mixes the pre-training paragraphs back in (0.1 copies each), the others do not.
    assert {part: c.data.demo_text_weight for part, c in configs.data.items()} == {
        "pretrain": 0.0, "sft": 0.1, "preference": 0.0}


def test_every_command_line_override_wins_in_every_stage():
    configs = stage_configs(_run_cfg(ALL_STAGES, "deepspeed=zero2", "train.lr=5e-4", "peft.r=4",
                                     "data.seq_len=128", "tune.num_samples=2", "model=tiny-2l"))
    # deepspeed=zero2 equals the schema's defaults and still wins over the pre-training stage's offload.
    assert configs.train.deepspeed.offload_optimizer == "none" and configs.train.deepspeed.zero_stage == 2
    assert configs.sft.train.lr == configs.align.train.lr == configs.train.train.lr == 5e-4
    assert configs.align.peft.r == 4 and configs.align.peft.method == "lora"
    assert {c.data.seq_len for c in configs.data.values()} == {128}
    assert configs.tune.tune.num_samples == 2
    assert {c.model.name for c in (configs.train, configs.sft, configs.align, configs.rl, configs.tune)} == {"tiny-2l"}
    assert configs.rl.train.lr == 5e-4


def test_one_stage_is_changed_by_replacing_its_list():
    configs = stage_configs(_run_cfg('run.stage.sft=["objective=sft","peft=lora","train.max_steps=40"]'))
    assert configs.sft.peft.method == "lora" and configs.sft.train.max_steps == 40
    assert configs.train.peft.method == "none" and configs.train.train.max_steps == 100


def test_rayloom_config_run_shows_each_stages_settings():
    shown = to_yaml(compose("run"))
    for setting in ("deepspeed=zero2_offload", "train.max_steps=400", "train.lr=1e-4", "tune.name=demo-asha",
                    "data.seq_len=64"):
        assert setting in shown


def test_only_the_selected_stages_are_composed():
    configs = stage_configs(_run_cfg("run.stages=[model,data,train]"))
    assert configs.train is not None and configs.data is not None
    assert configs.sft is None and configs.align is None and configs.tune is None
    assert stage_configs(_run_cfg("run.stages=[model,data]", "run.tune=true")).tune is not None


def test_a_config_changed_after_composing_is_refused_not_silently_dropped():
    cfg = _run_cfg("model=tiny-2l")
    with pytest.raises(RuntimeError, match="run.overrides"):
        stage_configs(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, overrides=[])))
    moved = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5))
    with pytest.raises(RuntimeError, match="run.overrides"):
        stage_configs(moved)
    # Stages that use the run config itself need no recomposition.
    assert stage_configs(dataclasses.replace(moved, run=dataclasses.replace(moved.run, stages=["model"]))).train \
        is None


@pytest.mark.parametrize("stages,needle", [
    ("[model,train]", "add data to run.stages"),
    ("[data,model]", "in the recipe's order"),
    ("[model,model]", "each stage once"),
    ("[data,serve]", "add model to run.stages"),
    ("[model,bake]", "run.stages"),
])
def test_stage_list_mistakes_fail_while_composing(stages, needle):
    with pytest.raises(UserError, match=needle):
        compose("run", [f"run.stages={stages}"])


def test_run_tune_adds_the_tune_stage_before_eval():
    assert compose("run", ["run.tune=true"]).run.selected == ["model", "data", "train", "sft", "align", "rl", "tune",
                                                               "eval", "serve"]


def test_a_stage_starts_from_the_model_the_previous_stage_exported():
    cfg = stage_config(_run_cfg(), ["objective=dpo", "peft=lora"])
    run_cfg = starting_from(cfg, "/models/sft", "sft")
    assert run_cfg.model.path == "/models/sft" and run_cfg.model.preset is None and run_cfg.model.name == "tiny-sft"
    assert run_cfg.objective.name == "dpo" and starting_from(cfg, None, "sft") is cfg
    assert DemoState().final_model_dir is None


def test_loss_curve_shows_the_trend(capsys):
    history = [{"step": s, "loss": 5.0 - s / 10, "lr": 1e-3, "tokens_per_s": 100.0, "mfu": 0.01,
                "peak_flops_per_worker": 1e10} for s in range(1, 21)]
    print_loss_curve(history)
    out = capsys.readouterr().out
    assert "loss 4.900 -> 3.000 (falling)" in out
    rows = [line.split()[0] for line in out.splitlines()[1:-1]]
    assert rows[0] == "1" and rows[-1] == "20" and len(rows) < len(history)


def test_quiet_console_moves_library_records_and_raylet_lines_into_the_log(tmp_path, capsys):
    import sys

    library = logging.getLogger("somelib.quiet_test")
    library.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    console = QuietConsole(tmp_path / "run.log")
    try:
        console.mute()
        for attached in library.handlers:  # as ray.init does to the "ray" logger's handlers
            attached.setFormatter(logging.Formatter("%(message)s"))
        library.info("an INFO dump")
        library.warning("a library warning")
        library.error("a library error")
        raylet = logging.getLogger("rayloom.recipes.raylet")
        raylet.addHandler(console.file_handler)
        out = io.StringIO()
        stdout = _RayletLinesToLog(out, raylet)
        print("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started", file=stdout)
        print("[2026-12-06 11:30:38,829] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
              file=stdout)
        print("  a stage summary", file=stdout)
        raylet.removeHandler(console.file_handler)
    finally:
        console.restore()
        library.removeHandler(handler)
    err = capsys.readouterr().err
    assert "an INFO dump" not in err and "a library warning" not in err and "a library error" in err
    assert out.getvalue() == "  a stage summary\n"
    logged = (tmp_path / "run.log").read_text()
    assert "INFO somelib.quiet_test: an INFO dump" in logged and "a library warning" in logged and "(raylet) WARNING: 8 PYTHON" in logged
    assert "real_accelerator.py:213" in logged
    assert handler.level == logging.NOTSET  # restored


# Run in a child process: it moves the process's own file descriptor 2.
_NATIVE_OUTPUT = r"""
import os, sys
from pathlib import Path
from rayloom.progress import progress_stream
from rayloom.recipes.console import _stderr_into
from rayloom.progress import progress_to

log = Path(sys.argv[1])
with _stderr_into(log) as terminal, progress_to(terminal):
    os.write(2, b"[2026-12-06 11:17:45,032 E 11531 11531] core_worker.cc:2465: a native notice\n")
    sys.stderr.write("Loading weights: 100%|##########| 39/39\n")
    progress_stream().write("train demo: 2/100 steps\n")
    print("  a stage summary")
sys.stderr.write("after the block\n")
"""


def test_quiet_console_sends_file_descriptor_2_to_the_log_and_progress_bars_to_the_terminal(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "run.log"
    log.write_text("first record\n")
    out = subprocess.run([sys.executable, "-c", _NATIVE_OUTPUT, str(log)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "  a stage summary\n"
    assert out.stderr == "train demo: 2/100 steps\nafter the block\n"
    logged = log.read_text()
    assert logged.startswith("first record\n")  # appended, not replaced
    assert "core_worker.cc:2465: a native notice" in logged and "Loading weights" in logged
