"""The real entrypoints: `rayloom run` ending with the serve stage, and `rayloom serve` blocking until
Ctrl-C. Each runs the CLI in a subprocess with its own embedded Ray, real Ray Serve and vLLM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml

from rayloom.ports import free_port
from rayloom.waiting import wait_until

# Long suite, run by `make test-all`: `make test` runs `rayloom serve` as a process in test_serve_lifecycle.py (SIGTERM, hardening)
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAYLOOM_API_KEY", "RAY_ADDRESS")}
    env.update(extra)
    return env


def test_demo_run_ends_by_serving_the_model_and_chatting(tiny_model_dir, tmp_path):
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-m", "rayloom.cli", "run", "model=tiny-2l", "run.stages=[model,serve]",
         f"serve.port={port}", f"storage.root={tmp_path / 'runs'}"],
        capture_output=True, text=True, timeout=900, env=_env())
    assert out.returncode == 0, out.stderr[-4000:]
    assert f"endpoint: http://127.0.0.1:{port}/v1" in out.stdout
    # A held-out demo question, and the verdict against its known answer.
    assert "chat: 'What number comes after " in out.stdout and ("(correct;" in out.stdout or "(expected '" in out.stdout)
    assert "lineage: model tiny-2l (preset tiny-2l)" in out.stdout or "lineage: (no lineage recorded)" in out.stdout
    assert "2 stage(s) ran" in out.stdout


def test_rayloom_serve_blocks_serves_and_stops_on_ctrl_c(tiny_model_dir, tmp_path):
    from rayloom.serve import openai_client

    key = "cli-test-key-42"
    port = free_port()
    config_out = tmp_path / "serve_config.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayloom.cli", "serve", "model=tiny-2l", f"serve.port={port}",
         f"serve.config_out={config_out}", "serve.app_name=cli-app"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(RAYLOOM_API_KEY=key))
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        wait_until(lambda: ready.is_set() or proc.poll() is not None, 900, interval_s=1,
                   message=lambda: "rayloom serve to be ready: " + "".join(lines)[-4000:])
        output = "".join(lines)
        assert ready.is_set(), output[-4000:]
        assert f"endpoint: http://127.0.0.1:{port}/v1" in output and "health: ok" in output
        assert key not in output  # the key is never printed
        client = openai_client(f"http://127.0.0.1:{port}/v1", key, max_retries=0)
        reply = client.chat.completions.create(model="tiny-2l", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4)
        assert reply.usage.completion_tokens >= 1
        written = yaml.safe_load(config_out.read_text())
        app = written["applications"][0]
        assert app["import_path"] == "rayloom.serve.app:app_builder" and app["name"] == "cli-app"
        assert key not in config_out.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
        reader.join(timeout=10)
        assert "stopping cli-app" in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
