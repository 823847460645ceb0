"""`rayloom cluster up|down|status|probe|render`: a local Ray head (optionally with fake GPU nodes
that Ray's autoscaler adds and removes), and rendering of the cloud cluster configs.

    rayloom cluster up --local-fake          # head + autoscaler over cluster/local-fake-gpu.yaml
    rayloom cluster probe --gpus 1 --accelerator-type H100 --wait-idle
    rayloom cluster status
    rayloom cluster down
    rayloom cluster render aws --terraform-output tf-outputs.json -o aws-gpu.rendered.yaml
    rayloom cluster render kuberay serve=gpu model=hf model.path=s3://bucket/model ...
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from rayloom.cluster import head as head_mod
from rayloom.cluster import launcher
from rayloom.cluster.submit import ToolArgParser
from rayloom.config import compose, repo_root
from rayloom.errors import UserError

FAKE_ENV = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
KUBERAY_DIR = "cluster/kuberay"


def _state_dir(args) -> Path:
    return Path(args.state_dir).expanduser() if args.state_dir else head_mod.default_state_dir()


def _require_state(state_dir: Path) -> head_mod.HeadState:
    state = head_mod.read_state(state_dir)
    if state is None or not head_mod.is_alive(state.pid):
        raise UserError(f"no local cluster is up (state dir {state_dir}); start one with `rayloom cluster up`")
    return state


def cmd_up(args) -> int:
    from rayloom.runtime import default_num_cpus

    cluster = compose("run", list(args.overrides)).cluster
    state_dir = _state_dir(args)
    token_path = cluster.auth_token_path or head_mod.DEFAULT_TOKEN_PATH
    autoscaling_config = None
    extra_env: dict[str, str] = {}
    num_cpus = args.num_cpus or (2 if args.local_fake else default_num_cpus())
    if args.local_fake:
        import ray._private.services as services

        config = launcher.load_yaml(args.config or launcher.shipped_config(launcher.LOCAL_FAKE_YAML))
        rendered = launcher.render_local_fake(
            config, gcs_address=f"{services.get_node_ip_address()}:{args.port}", head_num_cpus=num_cpus,
            idle_timeout_minutes=args.idle_timeout_minutes)
        launcher.validate_launcher_config(rendered, "the local fake-GPU config")
        state_dir.mkdir(parents=True, exist_ok=True)
        autoscaling_config = launcher.write_yaml(rendered, state_dir / "autoscaling.yaml")
        extra_env = dict(FAKE_ENV)
    elif args.idle_timeout_minutes is not None or args.config:
        raise UserError("--idle-timeout-minutes and --config apply to --local-fake only")
    state = head_mod.start_head(state_dir, port=args.port, dashboard_port=args.dashboard_port, num_cpus=num_cpus,
                                token_path=token_path, autoscaling_config=autoscaling_config, extra_env=extra_env)
    kind = "with fake GPU nodes (autoscaling)" if args.local_fake else "(no autoscaling)"
    print(f"rayloom cluster: local Ray head up {kind}, pid {state.pid}\n"
          f"  job API (dashboard): {state.dashboard_url}   -> export RAY_ADDRESS={state.dashboard_url}\n"
          f"  GCS address:         {state.gcs_address}\n"
          f"  auth token file:     {state.token_path} (token auth on)\n"
          f"  submit a job:        rayloom submit run model=tiny-2l run.stages=[model]\n"
          f"  stop it:             rayloom cluster down")
    return 0


def cmd_down(args) -> int:
    state_dir = _state_dir(args)
    stopped = head_mod.stop_head(state_dir)
    print("rayloom cluster: stopped the local head" if stopped else
          f"rayloom cluster: no local head was running (state dir {state_dir})")
    return 0


def list_nodes(state: head_mod.HeadState) -> list:
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    headers = {"Authorization": f"Bearer {Path(state.token_path).read_text().strip()}"}
    client = StateApiClient(address=state.dashboard_url, headers=headers)
    return client.list(StateResource.NODES, options=ListApiOptions(detail=True, limit=1000),
                       raise_on_missing_output=False)


def accelerator_of(resources: dict) -> str:
    kinds = sorted(key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:"))
    return ",".join(kinds) or "-"


def cmd_status(args) -> int:
    state = _require_state(_state_dir(args))
    nodes = list_nodes(state)
    alive = [n for n in nodes if n.state == "ALIVE"]
    print(f"rayloom cluster: head pid {state.pid}, job API {state.dashboard_url}, GCS {state.gcs_address}"
          f"{', autoscaling (fake GPU nodes)' if state.autoscaling_config else ''}")
    print(f"{'NODE':14} {'ROLE':6} {'CPU':>5} {'GPU':>5} ACCELERATOR")
    for node in sorted(alive, key=lambda n: (not n.is_head_node, n.node_id)):
        res = node.resources_total or {}
        print(f"{node.node_id[-12:]:14} {'head' if node.is_head_node else 'worker':6} {res.get('CPU', 0):>5g} "
              f"{res.get('GPU', 0):>5g} {accelerator_of(res)}")
    print(f"{len(alive)} alive node(s), {len(nodes) - len(alive)} removed")
    return 0


def probe_gpu(state: head_mod.HeadState, num_gpus: float, accelerator_type: str, timeout_s: float,
              wait_idle_s: float) -> dict:
    """Run one task that needs GPUs and report where it ran; optionally wait until that node is
    removed for being idle. On a fake-GPU cluster this shows a scale-up and a scale-down."""
    # Before importing ray: it reads the auth mode once, when its core module loads.
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state.token_path})
    import ray

    ray.init(address=state.gcs_address, logging_level="WARNING", log_to_driver=False)
    try:
        before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}

        @ray.remote(num_cpus=1, num_gpus=num_gpus, accelerator_type=accelerator_type or None)
        def where() -> tuple[str, list]:
            return ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]

        start = time.monotonic()
        node_id, gpu_ids = ray.get(where.remote(), timeout=timeout_s)
        result = {"node_id": node_id, "gpu_ids": gpu_ids, "new_node": node_id not in before,
                  "scheduled_after_s": round(time.monotonic() - start, 1)}
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        result["accelerator"] = accelerator_of(node["Resources"])
        result["node_gpus"] = node["Resources"].get("GPU", 0)
        if wait_idle_s > 0:
            start = time.monotonic()
            removed = False
            while time.monotonic() - start < wait_idle_s:
                if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
                    removed = True
                    break
                time.sleep(1)
            result["removed_when_idle"] = removed
            result["removed_after_s"] = round(time.monotonic() - start, 1)
        return result
    finally:
        ray.shutdown()


def cmd_probe(args) -> int:
    state = _require_state(_state_dir(args))
    result = probe_gpu(state, args.gpus, args.accelerator_type, args.timeout, args.wait_idle)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"GPU task ran on node {result['node_id'][-12:]} ({result['accelerator']}, {result['node_gpus']:g} GPUs) "
          f"with GPU ids {result['gpu_ids']} after {result['scheduled_after_s']}s"
          f"{' - a node the autoscaler added for it' if result['new_node'] else ''}")
    if "removed_when_idle" in result:
        print(f"the node was {'removed' if result['removed_when_idle'] else 'NOT removed'} "
              f"{result['removed_after_s']}s after the task ended")
    return 0


def render_kuberay_files(overrides: list[str], out_dir: Path) -> list[Path]:
    from rayloom.cluster.kuberay import render_kuberay

    manifests = render_kuberay(compose("serve", overrides), compose("train", overrides), overrides)
    header = ("# Generated by: rayloom cluster render kuberay " + " ".join(shlex.quote(o) for o in overrides) +
              "\n# Edit cluster/kuberay/raycluster.yaml or the config tree and re-render; do not edit by hand.\n")
    return [launcher.write_yaml(manifest, out_dir / name, header) for name, manifest in manifests.items()]


def cmd_render(args) -> int:
    if args.target == "aws":
        if not args.terraform_output:
            raise UserError("render aws needs --terraform-output (the JSON of `terraform output -json`)")
        config = launcher.load_yaml(launcher.shipped_config(launcher.AWS_GPU_YAML))
        rendered = launcher.render_from_terraform(config, launcher.load_terraform_outputs(args.terraform_output))
        launcher.validate_launcher_config(rendered, "the rendered AWS config")
        out = Path(args.out or "aws-gpu.rendered.yaml")
        launcher.write_yaml(rendered, out, "# Rendered from cluster/aws-gpu.yaml and terraform outputs.\n")
        print(f"rayloom cluster: wrote {out}; start it with `ray up {out}`")
        return 0
    out_dir = Path(args.out) if args.out else repo_root() / KUBERAY_DIR
    for path in render_kuberay_files(list(args.overrides), out_dir):
        print(f"rayloom cluster: wrote {path}")
    return 0


def build_parser(action: str) -> argparse.ArgumentParser:
    parser = ToolArgParser(prog=f"rayloom cluster {action}", description=_ACTIONS[action][1])
    parser.add_argument("--state-dir", default="", help="where the local head's state lives "
                                                         "(default: $RAYLOOM_CACHE_DIR/cluster)")
    if action == "up":
        parser.add_argument("--local-fake", action="store_true",
                            help="start the autoscaler with fake GPU nodes (cluster/local-fake-gpu.yaml)")
        parser.add_argument("--port", type=int, default=6379, help="GCS port (default 6379)")
        parser.add_argument("--dashboard-port", type=int, default=8265, help="job API port (default 8265)")
        parser.add_argument("--num-cpus", type=int, default=0, help="logical CPUs of the head")
        parser.add_argument("--idle-timeout-minutes", type=float, default=None,
                            help="fake GPU nodes: idle minutes before removal (default: from the config)")
        parser.add_argument("--config", default="", help="launcher YAML for --local-fake")
        parser.add_argument("overrides", nargs="*", help="cluster overrides, e.g. cluster.auth_token_path=...")
    elif action == "probe":
        parser.add_argument("--gpus", type=float, default=1.0)
        parser.add_argument("--accelerator-type", default="", help="e.g. A10G, H100, H200")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a GPU node")
        parser.add_argument("--wait-idle", type=float, nargs="?", const=120.0, default=0.0,
                            help="then wait (up to N s, default 120) until the node is removed when idle")
        parser.add_argument("--json", action="store_true")
    elif action == "render":
        parser.add_argument("target", choices=["aws", "kuberay"])
        parser.add_argument("overrides", nargs="*", help="kuberay: Hydra overrides (serve=gpu model.path=...)")
        parser.add_argument("--terraform-output", default="", help="aws: JSON of `terraform output -json`")
        parser.add_argument("-o", "--out", default="", help="output file (aws) or directory (kuberay)")
    return parser


_ACTIONS = {
    "up": (cmd_up, "start a local Ray head (token auth on); --local-fake adds autoscaling fake GPU nodes"),
    "down": (cmd_down, "stop the local head and everything it started (other Ray clusters are untouched)"),
    "status": (cmd_status, "the local head's addresses and its nodes (role, CPUs, GPUs, accelerator)"),
    "probe": (cmd_probe, "run a GPU-requesting task on the local cluster and report the node it ran on"),
    "render": (cmd_render, "render cluster/aws-gpu.yaml from terraform outputs, or the KubeRay manifests"),
}


def cluster_main(argv: list[str]) -> int:
    if not argv:
        raise UserError(f"missing action: choose one of {', '.join(_ACTIONS)}")
    if argv[0] in ("-h", "--help"):
        print("usage: rayloom cluster <action> [options]\n\nactions:")
        for action, (_, text) in _ACTIONS.items():
            print(f"  {action:7} {text}")
        return 0
    action, rest = argv[0], argv[1:]
    if action not in _ACTIONS:
        raise UserError(f"unknown action {action!r}: choose one of {', '.join(_ACTIONS)}")
    args = build_parser(action).parse_intermixed_args(rest)
    return _ACTIONS[action][0](args)


if __name__ == "__main__":
    sys.exit(cluster_main(sys.argv[1:]))
