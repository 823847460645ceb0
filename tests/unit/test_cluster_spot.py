"""Spot capacity in the cluster configs, and the interruption watcher against a real HTTP server on
127.0.0.1 that speaks the IMDSv2 protocol (token PUT, token-checked GETs, 404 until a notice)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from helpers import REPO_ROOT

WATCHER = REPO_ROOT / "cluster" / "spot" / "interruption_watcher.py"
DRAIN_NODE = REPO_ROOT / "cluster" / "spot" / "drain_node.py"
AWS_YAML = REPO_ROOT / "cluster" / "aws-gpu.yaml"
KUBERAY = REPO_ROOT / "cluster" / "kuberay"


class FakeImds:
    """IMDSv2 on 127.0.0.1: PUT /latest/api/token hands out a token; every GET must carry the
    current one (401 otherwise); spot/instance-action is 404 for `quiet_polls` polls, then a notice
    `notice_in_s` seconds ahead. `rotate_after` GETs, the token changes (as if it expired)."""

    def __init__(self, life_cycle="spot", quiet_polls=3, notice_in_s=100.0, rotate_after=None):
        self.life_cycle, self.quiet_polls, self.notice_in_s = life_cycle, quiet_polls, notice_in_s
        self.rotate_after = rotate_after
        self.token_number = 0
        self.gets = 0
        self.polls = 0
        self.log: list[tuple[str, str, int]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status, body=b""):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                fake.log.append((self.command, self.path, status))

            def do_PUT(self):
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400)
                fake.token_number += 1
                self._send(200, fake.token().encode())

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != fake.token():
                    return self._send(401)
                fake.gets += 1
                if fake.rotate_after and fake.gets == fake.rotate_after:
                    fake.token_number += 1  # the next GET with the old token gets 401
                if self.path == "/latest/meta-data/instance-life-cycle":
                    return self._send(200, fake.life_cycle.encode())
                if self.path == "/latest/meta-data/spot/instance-action":
                    fake.polls += 1
                    if fake.polls <= fake.quiet_polls:
                        return self._send(404)
                    when = datetime.now(UTC) + timedelta(seconds=fake.notice_in_s)
                    notice = {"action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
                    return self._send(200, json.dumps(notice).encode())
                self._send(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self) -> str:
        return f"token-{self.token_number}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _run_watcher(imds: FakeImds, tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    record = tmp_path / "drains.jsonl"
    recorder = (f"{sys.executable} -c \"import json,sys; open({str(record)!r},'a').write(json.dumps(sys.argv[1:])+chr(10))\""
                " --deadline-remaining-seconds={deadline} {action} {time}")
    out = subprocess.run([sys.executable, str(WATCHER), "--imds-url", imds.url, "--poll-interval", "0.05",
                          "--drain-command", recorder, *extra], capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return out, calls


def test_watcher_drains_once_with_the_seconds_left(tmp_path):
    with FakeImds(quiet_polls=3, notice_in_s=100) as imds:
        out, calls = _run_watcher(imds, tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(calls) == 1, calls
    deadline_arg, action, when = calls[0]
    deadline = int(deadline_arg.split("=", 1)[1])
    # The notice says "100 s from now" at whole-second precision; the watcher reads it at once.
    assert 90 <= deadline <= 100, deadline
    assert action == "terminate" and when.endswith("Z")
    assert imds.polls == 4, "polled until the notice came, then stopped"
    assert imds.log[0][:2] == ("PUT", "/latest/api/token"), "IMDSv2: token first"
    assert all(status != 401 for _, _, status in imds.log)
    assert "spot interruption notice" in out.stderr


def test_watcher_refreshes_a_rotated_token(tmp_path):
    with FakeImds(quiet_polls=4, rotate_after=2) as imds:
        out, calls = _run_watcher(imds, tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(calls) == 1
    puts = [entry for entry in imds.log if entry[0] == "PUT"]
    assert len(puts) == 2 and (("GET", "/latest/meta-data/spot/instance-action", 401) in imds.log)


def test_watcher_leaves_on_demand_instances_alone(tmp_path):
    with FakeImds(life_cycle="on-demand", quiet_polls=0) as imds:
        out, calls = _run_watcher(imds, tmp_path)
    assert out.returncode == 0 and calls == [] and imds.polls == 0
    assert "not spot" in out.stderr


def test_watcher_passes_zero_when_the_notice_is_already_due(tmp_path):
    with FakeImds(quiet_polls=0, notice_in_s=-30) as imds:
        out, calls = _run_watcher(imds, tmp_path)
    assert out.returncode == 0 and [c[0] for c in calls] == ["--deadline-remaining-seconds=0"]


def test_watcher_retries_a_failing_drain_then_reports_it(tmp_path):
    with FakeImds(quiet_polls=0, notice_in_s=100) as imds:
        out = subprocess.run([sys.executable, str(WATCHER), "--imds-url", imds.url, "--poll-interval", "0.05",
                              "--attempts", "2", "--retry-interval", "0.05", "--drain-command", f"{sys.executable} -c 'raise SystemExit(3)'"],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.count("drain command exited 3") == 2


def test_watcher_without_metadata_service_says_so(tmp_path):
    with FakeImds() as imds:
        url = imds.url
    out = subprocess.run([sys.executable, str(WATCHER), "--imds-url", url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unreachable" in out.stderr


def test_default_drain_command_and_drain_node_flags_match_rays_cli():
    sys.path.insert(0, str(WATCHER.parent))
    try:
        import interruption_watcher as watcher
    finally:
        sys.path.pop(0)
    when = datetime(2026, 12, 6, 5, 2, 5, tzinfo=UTC)
    argv = watcher.drain_argv(watcher.DEFAULT_DRAIN, 97, "terminate", when)
    assert argv[1] == str(DRAIN_NODE) and argv[argv.index("--deadline-seconds") + 1] == "97"
    assert argv[-1] == "EC2 spot interruption notice: terminate at 2026-12-06T05:02:05Z"
    # drain_node.py calls `ray drain-node` with these flags; Ray's CLI must still offer them.
    from click.testing import CliRunner
    from ray.scripts.scripts import cli

    help_text = CliRunner().invoke(cli, ["drain-node", "--help"]).output
    for flag in ("--address", "--node-id", "--reason", "--reason-message", "--deadline-remaining-seconds",
                 "DRAIN_NODE_REASON_PREEMPTION"):
        assert flag in help_text, flag
    text = DRAIN_NODE.read_text()
    for flag in ("--address", "--node-id", "--reason", "--reason-message", "--deadline-remaining-seconds"):
        assert f'"{flag}"' in text, flag
    out = subprocess.run([sys.executable, str(DRAIN_NODE), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--hold-seconds" in out.stdout


# --- spot capacity in the configs ---------------------------------------------------------------------

def test_launcher_has_spot_gpu_types_beside_on_demand():
    config = yaml.safe_load(AWS_YAML.read_text())
    types = config["available_node_types"]
    spot = {n: t for n, t in types.items() if t["node_config"].get("InstanceMarketOptions")}
    assert spot, "no spot node type"
    for name, spec in spot.items():
        market = spec["node_config"]["InstanceMarketOptions"]
        assert market["MarketType"] == "spot", name
        assert market["SpotOptions"] == {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        assert spec["labels"]["rayloom.io/capacity"] == "spot" and spec["resources"]["GPU"] >= 1, name
        twin = name.removesuffix(".spot")
        assert twin != name and twin in types, f"{name}: the on-demand twin {twin} is missing"
        assert types[twin]["node_config"]["InstanceType"] == spec["node_config"]["InstanceType"]
        assert types[twin]["resources"] == spec["resources"], "same resources: the same jobs fit both"
    starts = " ".join(config["worker_start_ray_commands"])
    assert "cluster/spot/interruption_watcher.py" in starts


def _worker_groups(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        spec = {"RayCluster": lambda d: d["spec"], "RayJob": lambda d: d["spec"]["rayClusterSpec"],
                "RayService": lambda d: d["spec"]["rayClusterConfig"]}.get(doc["kind"])
        if spec:
            yield from spec(doc)["workerGroupSpecs"]


def test_kuberay_spot_groups_select_spot_nodes_and_drain_on_eviction():
    groups = list(_worker_groups(KUBERAY / "raycluster.yaml"))
    spot = [g for g in groups if g["template"]["metadata"]["labels"].get("rayloom.io/capacity") == "spot"]
    assert spot
    names = {g["groupName"] for g in groups}
    for group in spot:
        pod = group["template"]["spec"]
        assert pod["nodeSelector"]["karpenter.sh/capacity-type"] == "spot", group["groupName"]
        assert {"key": "karpenter.sh/capacity-type", "operator": "Equal", "value": "spot",
                "effect": "NoSchedule"} in pod["tolerations"]
        assert group["groupName"].removesuffix("-spot") in names
        grace = pod["terminationGracePeriodSeconds"]
        assert 0 < grace <= 120, "EC2 gives two minutes of notice"
        [container] = pod["containers"]
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        line = " ".join(hook)
        assert "/app/cluster/spot/drain_node.py" in line and "--deadline-seconds" in line
        deadline = int(hook[hook.index("--deadline-seconds") + 1])
        hold = float(hook[hook.index("--hold-seconds") + 1])
        assert hold < deadline <= grace, "the hook ends before the kubelet's SIGKILL"
    # The training RayJob gets the spot group too (it is in the train pool).
    job_groups = {g["groupName"] for g in _worker_groups(KUBERAY / "rayjob-train.yaml")}
    assert {g["groupName"] for g in spot if g["template"]["metadata"]["labels"]["rayloom.io/pool"] == "train"} <= job_groups


def test_node_termination_handler_values_drain_spot_nodes():
    values = yaml.safe_load((KUBERAY / "node-termination-handler" / "values.yaml").read_text())
    assert values["enableSpotInterruptionDraining"] is True
    assert values["podTerminationGracePeriod"] == -1, "respect the pods' own grace period"
    assert values["deleteLocalData"] is True and values["ignoreDaemonSets"] is True
    assert values["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}


@pytest.mark.parametrize("path", ["cluster/spot/interruption_watcher.py"])
def test_watcher_is_standard_library_only(path):
    import ast

    tree = ast.parse((REPO_ROOT / path).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_fake_imds_is_a_real_server():
    import urllib.request

    with FakeImds() as imds:
        request = urllib.request.Request(f"{imds.url}/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read() == b"token-1"
