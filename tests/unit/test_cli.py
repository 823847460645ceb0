"""The CLI's contract: one parser tree lists every command; user mistakes exit 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from rayloom.cli import TOOLS, main
from rayloom.config import JOBS as PRIMARY_CONFIGS
from rayloom.entry import JOBS


def _run(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayloom.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_help_lists_every_command():
    out = _run("--help")
    assert out.returncode == 0
    for command in [*JOBS, *TOOLS, "config", "doctor"]:
        assert command in out.stdout


def test_the_jobs_are_the_primary_configs():
    # compose accepts exactly the jobs the CLI offers (conf/<job>.yaml each).
    assert list(JOBS) == list(PRIMARY_CONFIGS)


@pytest.mark.parametrize("argv,usage", [
    (["submit", "--help"], "usage: rayloom submit"),
    (["jobs", "logs", "--help"], "usage: rayloom jobs logs"),
    (["cluster", "render", "--help"], "usage: rayloom cluster render"),
    (["chat", "--help"], "usage: rayloom chat"),
    (["export", "--help"], "usage: rayloom export"),
])
def test_tool_commands_are_part_of_the_one_parser_tree(argv, usage, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_bad_override_value_exits_2_without_traceback():
    out = _run("config", "train", "model=tiny", "train.lr=-1")
    assert out.returncode == 2
    assert "train.lr" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (("bake",), "invalid choice"),
        (("cluster", "frobnicate"), "invalid choice"),
        (("jobs", "status"), "job_id"),
        (("config", "train", "train.nope=1"), "train.nope"),
        (("config", "train", "model=gigantic"), "model/gigantic"),
        (("config", "train", "train.lr"), "train.lr"),
        (("config", "nosuchjob"), "invalid choice"),
        (("run", "model=hf", "model.path=/no/such/model", "run.stages=[model]"), "/no/such/model"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(args, needle):
    out = _run(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_config_prints_the_resolved_tree():
    out = _run("config", "train", "deepspeed=zero3_offload", "train.lr=3e-4")
    assert out.returncode == 0
    assert "offload_param: cpu" in out.stdout and "lr: 0.0003" in out.stdout


def test_job_entrypoint_rejects_bad_config_with_exit_2():
    out = subprocess.run([sys.executable, "jobs/train.py", "train.lr=-1"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 2
    assert "train.lr" in out.stderr and "Traceback" not in out.stderr


def test_importing_rayloom_does_not_start_or_import_ray():
    code = ("import sys, rayloom, rayloom.cli, rayloom.config, rayloom.runtime, rayloom.storage; "
            "print(sorted(m for m in ('ray', 'torch', 'vllm', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
