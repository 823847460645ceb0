"""The command line of rayloom.cluster: `rayloom submit`, `rayloom jobs <action>` and
`rayloom cluster <action>`.

Each `add_*_command` adds one command, with its sub-commands, to the rayloom CLI's argparse tree
(rayloom.cli builds the whole tree); `submit_main` / `jobs_main` / `cluster_main` run one command
from an argv list with the same parser (tests, benchmarks, scripts).

    rayloom submit train model=tiny-2l --address http://head:8265
    rayloom jobs logs <submission id> -f
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
import shlex
from pathlib import Path

from rayloom.cluster import head as head_mod
from rayloom.cluster import launcher, local_fake, submit
from rayloom.cluster.kuberay import render_kuberay
from rayloom.config import JOBS, compose, repo_root
from rayloom.errors import UserError
from rayloom.runtime import DEFAULT_TOKEN_PATH, default_num_cpus

KUBERAY_DIR = "cluster/kuberay"
_ADDRESS_HELP = "job API address (default: cluster.address / RAY_ADDRESS)"
_CLUSTER_OVERRIDES_HELP = "cluster overrides, e.g. cluster.auth_token_path=..."


class CommandParser(argparse.ArgumentParser):
    """The rayloom CLI's parser class: a command's Hydra overrides may come before, between or after
    its options (`submit run model=tiny --address URL train.lr=1e-4`), as `parse_intermixed_args`
    allows. A parser holding sub-commands parses as usual (argparse cannot intermix those), and
    `add_subparsers` makes its sub-command parsers of this class too."""

    _has_commands = False
    _intermixing = False

    def add_subparsers(self, **kwargs):
        self._has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):
        if self._has_commands or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls parse_known_args itself
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


# --- submit and jobs ------------------------------------------------------------------------------

def add_submit_command(commands) -> argparse.ArgumentParser:
    text = "submit a job to cluster.address as a Ray job, follow its logs, return its exit status"
    parser = commands.add_parser(
        "submit", help=text,
        description="Submit jobs/<job>.py with Hydra overrides to cluster.address as a Ray job, follow its logs "
                    "and exit with the job's exit status.")
    parser.add_argument("job", choices=JOBS, help=", ".join(JOBS))
    parser.add_argument("overrides", nargs="*", default=(), help="Hydra overrides, composed locally first, e.g. train.lr=3e-4")
    parser.add_argument("--address", default="", help=_ADDRESS_HELP)
    parser.add_argument("--no-wait", action="store_true", help="submit, print the submission id and return")
    parser.add_argument("--submission-id", default="", help="id for the job (default: rayloom-<job>-<time>-<rand>)")
    parser.set_defaults(run=lambda args: submit.submit(args.job, list(args.overrides), address=args.address,
                                                       no_wait=args.no_wait, submission_id=args.submission_id))
    return parser


_JOB_ACTIONS = {
    "list": ("every job on the cluster, oldest first", lambda client, args: submit.list_jobs(client)),
    "status": ("status, exit code and message of one job",
               lambda client, args: submit.show_status(client, args.job_id)),
    "logs": ("the job's logs (-f: follow until it ends)",
             lambda client, args: submit.show_logs(client, args.job_id, args.follow)),
    "stop": ("stop a running job and wait until it has stopped",
             lambda client, args: submit.stop_job(client, args.job_id)),
}


def add_jobs_command(commands) -> argparse.ArgumentParser:
    text = "list, inspect, follow or stop Ray jobs on cluster.address"
    parser = commands.add_parser("jobs", help=text, description=text)
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, (action_help, action) in _JOB_ACTIONS.items():
        sub = actions.add_parser(name, help=action_help, description=action_help)
        if name != "list":
            sub.add_argument("job_id")
        if name == "logs":
            sub.add_argument("-f", "--follow", action="store_true")
        sub.add_argument("overrides", nargs="*", default=(), help=_CLUSTER_OVERRIDES_HELP)
        sub.add_argument("--address", default="", help=_ADDRESS_HELP)
        sub.set_defaults(run=lambda args, action=action: _run_job_action(action, args))
    return parser


def _run_job_action(action, args: argparse.Namespace) -> int:
    client, address = submit.open_job_api(list(args.overrides), args.address)
    with submit.job_api_errors(address):
        return action(client, args)


# --- cluster --------------------------------------------------------------------------------------

def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).expanduser() if args.state_dir else head_mod.default_state_dir()


def _require_state(state_dir: Path) -> head_mod.HeadState:
    state = head_mod.read_state(state_dir)
    if state is None or not head_mod.is_alive(state.pid):
        raise UserError(f"no local cluster is up (state dir {state_dir}); start one with `rayloom cluster up`")
    return state


def cluster_up(args: argparse.Namespace) -> int:
    cluster = compose("run", list(args.overrides)).cluster
    state_dir = _state_dir(args)
    num_cpus = args.num_cpus or (2 if args.local_fake else default_num_cpus())
    autoscaling_config = None
    extra_env: dict[str, str] = {}
    if args.local_fake:
        autoscaling_config = local_fake.write_autoscaling_config(
            state_dir, port=args.port, head_num_cpus=num_cpus, config=args.config,
            idle_timeout_minutes=args.idle_timeout_minutes)
        extra_env = dict(local_fake.FAKE_ENV)
    elif args.idle_timeout_minutes is not None or args.config:
        raise UserError("--idle-timeout-minutes and --config apply to --local-fake only")
    state = head_mod.start_head(state_dir, port=args.port, dashboard_port=args.dashboard_port, num_cpus=num_cpus,
                                token_path=cluster.auth_token_path or DEFAULT_TOKEN_PATH,
                                autoscaling_config=autoscaling_config, extra_env=extra_env)
    kind = "with fake GPU nodes (autoscaling)" if args.local_fake else "(no autoscaling)"
    print(f"rayloom cluster: local Ray head up {kind}, pid {state.pid}\n"
          f"  job API (dashboard): {state.dashboard_url}   -> export RAY_ADDRESS={state.dashboard_url}\n"
          f"  GCS address:         {state.gcs_address}\n"
          f"  auth token file:     {state.token_path} (token auth on)\n"
          f"  submit a job:        rayloom submit run model=tiny-2l run.stages=[model]\n"
          f"  stop it:             rayloom cluster down")
    return 0


def cluster_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    stopped = head_mod.stop_head(state_dir)
    print("rayloom cluster: stopped the local head" if stopped else
          f"rayloom cluster: no local head was running (state dir {state_dir})")
    return 0


def cluster_status(args: argparse.Namespace) -> int:
    state = _require_state(_state_dir(args))
    nodes = head_mod.list_nodes(state)
    alive = [n for n in nodes if n.state == "ALIVE"]
    print(f"rayloom cluster: head pid {state.pid}, job API {state.dashboard_url}, GCS {state.gcs_address}"
          f"{', autoscaling (fake GPU nodes)' if state.autoscaling_config else ''}")
    print(f"{'NODE':14} {'ROLE':6} {'CPU':>5} {'GPU':>5} ACCELERATOR")
    for node in sorted(alive, key=lambda n: (not n.is_head_node, n.node_id)):
        res = node.resources_total or {}
        print(f"{node.node_id[-12:]:14} {'head' if node.is_head_node else 'worker':6} {res.get('CPU', 0):>5g} "
              f"{res.get('GPU', 0):>5g} {local_fake.accelerator_of(res)}")
    print(f"{len(alive)} alive node(s), {len(nodes) - len(alive)} removed")
    return 0


def cluster_probe(args: argparse.Namespace) -> int:
    state = _require_state(_state_dir(args))
    result = local_fake.probe_gpu(state, args.gpus, args.accelerator_type, args.timeout, args.wait_idle)
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
    manifests = render_kuberay(compose("serve", overrides), compose("train", overrides), overrides)
    header = ("# Generated by: rayloom cluster render kuberay " + " ".join(shlex.quote(o) for o in overrides) +
              "\n# Edit cluster/kuberay/raycluster.yaml or the config tree and re-render; do not edit by hand.\n")
    return [launcher.write_yaml(manifest, out_dir / name, header) for name, manifest in manifests.items()]


def cluster_render(args: argparse.Namespace) -> int:
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


_CLUSTER_ACTIONS = {
    "up": ("start a local Ray head (token auth on); --local-fake adds autoscaling fake GPU nodes", cluster_up),
    "down": ("stop the local head and everything it started (other Ray clusters are untouched)", cluster_down),
    "status": ("the local head's addresses and its nodes (role, CPUs, GPUs, accelerator)", cluster_status),
    "probe": ("run a GPU-requesting task on the local cluster and report the node it ran on", cluster_probe),
    "render": ("render cluster/aws-gpu.yaml from terraform outputs, or the KubeRay manifests", cluster_render),
}


def add_cluster_command(commands) -> argparse.ArgumentParser:
    text = "start/stop a local autoscaling cluster with fake GPU nodes (cluster up --local-fake); render configs"
    parser = commands.add_parser("cluster", help=text, description=text)
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, (action_help, run) in _CLUSTER_ACTIONS.items():
        sub = actions.add_parser(name, help=action_help, description=action_help)
        sub.set_defaults(run=run)
        sub.add_argument("--state-dir", default="", help="where the local head's state lives "
                                                         "(default: $RAYLOOM_CACHE_DIR/cluster)")
        if name in _ACTION_ARGUMENTS:
            _ACTION_ARGUMENTS[name](sub)
    return parser


def _up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local-fake", action="store_true",
                        help="start the autoscaler with fake GPU nodes (cluster/local-fake-gpu.yaml)")
    parser.add_argument("--port", type=int, default=6379, help="GCS port (default 6379)")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="job API port (default 8265)")
    parser.add_argument("--num-cpus", type=int, default=0, help="logical CPUs of the head")
    parser.add_argument("--idle-timeout-minutes", type=float, default=None,
                        help="fake GPU nodes: idle minutes before removal (default: from the config)")
    parser.add_argument("--config", default="", help="launcher YAML for --local-fake")
    parser.add_argument("overrides", nargs="*", default=(), help=_CLUSTER_OVERRIDES_HELP)


def _probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=float, default=1.0)
    parser.add_argument("--accelerator-type", default="", help="e.g. A10G, H100, H200")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a GPU node")
    parser.add_argument("--wait-idle", type=float, nargs="?", const=120.0, default=0.0,
                        help="then wait (up to N s, default 120) until the node is removed when idle")
    parser.add_argument("--json", action="store_true")


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["aws", "kuberay"])
    parser.add_argument("overrides", nargs="*", default=(), help="kuberay: Hydra overrides (serve=gpu model.path=...)")
    parser.add_argument("--terraform-output", default="", help="aws: JSON of `terraform output -json`")
    parser.add_argument("-o", "--out", default="", help="output file (aws) or directory (kuberay)")


_ACTION_ARGUMENTS = {"up": _up_arguments, "probe": _probe_arguments, "render": _render_arguments}


# --- one command from an argv list ---------------------------------------------------------------

def _run_command(add_command, name: str, argv: list[str]) -> int:
    parser = CommandParser(prog="rayloom")
    add_command(parser.add_subparsers(required=True))
    args = parser.parse_args([name, *argv])
    return int(args.run(args) or 0)


def submit_main(argv: list[str]) -> int:
    """`rayloom submit ARGV...`: the job's exit status."""
    return _run_command(add_submit_command, "submit", argv)


def jobs_main(argv: list[str]) -> int:
    """`rayloom jobs ACTION ARGV...`."""
    return _run_command(add_jobs_command, "jobs", argv)


def cluster_main(argv: list[str]) -> int:
    """`rayloom cluster ACTION ARGV...`."""
    return _run_command(add_cluster_command, "cluster", argv)
