"""`rayloom run` through the real CLI: the demo with short training stages (model, data,
pre-training, alignment, eval, serve) whose console holds stage summaries and progress bars, not
library log records or native notices, and whose pre-training stage runs with the command line's
overrides (deepspeed=zero2 means no offload; train.lr is used as given)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

# Long suite, run by `make test-all`: the stages' own tests run in `make test`; this is the CLI end to end (~6-8 min)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What the console must not show (all of it goes to the log files instead).
NOISE = {
    "Ray Data per-operator INFO": re.compile(r"streaming_executor|logging_progress|Execution plan of Dataset|"
                                             r"Operator \d+|Running Dataset"),
    "Ray INFO/WARNING record": re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING)\b", re.M),
    "rayloom INFO record": re.compile(r"^\d\d:\d\d:\d\d (INFO|DEBUG) ", re.M),
    "JSON log record": re.compile(r"^\s*\{.*\"(levelname|level|asctime|message|msg)\"\s*:", re.M),
    "Serve deployment dict": re.compile(r"'deployment_config'|\"deployment_config\"|DeploymentConfig\(|"
                                        r"'num_replicas':"),
    "raylet worker-count warning": re.compile(r"\(raylet\)|worker processes have been started"),
    "token-auth notice": re.compile(r"Token authentication is enabled"),
    "Ray C++ notice": re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWE] \d+ \d+\] \w+\.cc:\d+", re.M),
    "DeepSpeed record": re.compile(r"\[(INFO|WARNING)\] \[\w+\.py:\d+:"),
    "signal stack report": re.compile(r"\*\*\* SIG\w+ received"),
    "library progress bar": re.compile(r"Loading weights|Writing model shards"),
}


def test_demo_console_is_quiet_and_the_overrides_reach_the_stage(tiny_model_dir, tmp_path):
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYLOOM_API_KEY")}
    out = subprocess.run(
        [sys.executable, "-m", "rayloom.cli", "run", "run.stages=[model,data,train,align,eval,serve]", "model=tiny-2l",
         "deepspeed=zero2", "train.lr=5e-4", "train.max_steps=2", "train.warmup_steps=0", "train.eval_every=2",
         "train.checkpoint_every=2", "data.num_demo_records=200", "data.num_demo_eval=20", f"storage.root={root}"],
        capture_output=True, text=True, timeout=1200, env=env)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-4000:]
    for name, pattern in NOISE.items():
        match = pattern.search(console)
        assert match is None, f"{name} on the console: {console[max(0, match.start() - 200):match.end() + 200]!r}"
    # The stage summaries are there, and the pre-training stage ran with the command line's settings.
    for stage in ("model", "data", "train", "align", "eval", "serve"):
        assert f"== stage {stage} ==" in out.stdout
    assert "DeepSpeed ZeRO-2, lr 0.0005, 2 steps" in out.stdout  # no "+ cpu optimizer offload"
    assert "rayloom data: demo-preference" in out.stdout
    assert re.search(r"loss [\d.]+ -> [\d.]+ \((NOT )?falling\)", out.stdout)
    assert "endpoint: http://" in out.stdout and "chat: " in out.stdout
    assert "6 stage(s) ran" in out.stdout
    # One line names the log files; the records are there, not lost.
    logs = [line for line in out.stdout.splitlines() if line.startswith("logs: ")]
    assert len(logs) == 1, logs
    log_file = next((root / "logs").glob("run-*.log"))
    assert str(log_file) in logs[0]
    logged = log_file.read_text()
    assert "rayloom.data.pipeline" in logged and "Token authentication is enabled" in logged
