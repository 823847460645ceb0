"""`rayloom <command> ...`: one argparse tree for every command.

Job commands (rayloom.entry.JOBS) compose the Hydra tree (conf/<job>.yaml + overrides) into one
typed config and call one library function. Tool commands add their own sub-tree to the same
parser (`add_*_command` in their packages). User mistakes exit 2 with a one-paragraph message
and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from functools import partial

from rayloom import __version__
from rayloom.cluster.commands import CommandParser, add_cluster_command, add_jobs_command, add_submit_command
from rayloom.config import compose, to_yaml
from rayloom.doctor import run_doctor
from rayloom.entry import JOBS
from rayloom.errors import UserError
from rayloom.log_setup import configure_logging
from rayloom.planner import add_plan_command
from rayloom.serve.admin import VERBS as SERVE_VERBS
from rayloom.serve.admin import add_serve_admin_command
from rayloom.serve.chat import add_chat_command
from rayloom.storage.commands import add_storage_command
from rayloom.train.export import add_export_command

# Tool commands: their arguments and the function they run come from their own packages.
TOOLS = {
    "chat": add_chat_command,
    "submit": add_submit_command,
    "jobs": add_jobs_command,
    "cluster": add_cluster_command,
    "export": add_export_command,
    "serve-admin": add_serve_admin_command,
    "storage": add_storage_command,
    "plan": add_plan_command,
}

EPILOG = """examples:
  rayloom config train model=tiny train.lr=3e-4     print the composed, validated config
  rayloom run                                       the end-to-end demo on the embedded Ray
  rayloom train deepspeed=zero3_offload peft=lora   override any group or key, Hydra style
  rayloom doctor                                    what this machine has and whether it works
  rayloom serve status cluster.address=auto         a running endpoint's versions and replicas
                                                    (also: publish, unpublish, promote, rollback)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="rayloom",
        description="Ray-native LLM platform: one Hydra config tree from data to a served endpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rayloom {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, job in JOBS.items():
        sub = commands.add_parser(name, help=job.help, description=job.help)
        sub.add_argument("overrides", nargs="*", default=(), help="Hydra overrides, e.g. train.lr=3e-4 deepspeed=zero3")
        sub.set_defaults(run=partial(_run_job, name))
    config = commands.add_parser("config", help="print a job's composed, resolved config",
                                 description="Compose conf/<job>.yaml with overrides, validate it and print it.")
    config.add_argument("job", choices=list(JOBS), help=", ".join(JOBS))
    config.add_argument("overrides", nargs="*", default=())
    config.set_defaults(run=_print_config)
    doctor = commands.add_parser("doctor", help="report versions, hardware, engines, Ray and S3 readiness",
                                 description="Report versions, hardware, whether vLLM/DeepSpeed ops load, "
                                             "Ray reachability and whether S3 credentials are present.")
    doctor.add_argument("--quick", action="store_true", help="skip loading vLLM and building DeepSpeed ops")
    doctor.add_argument("overrides", nargs="*", default=())
    doctor.set_defaults(run=_doctor)
    for add_command in TOOLS.values():
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"] and argv[1:2] and argv[1] in SERVE_VERBS:
        argv = ["serve-admin", *argv[1:]]  # `rayloom serve status ...`; `rayloom serve k=v ...` deploys
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        if command in TOOLS:  # job commands set up logging once their config composed; config/doctor only print
            configure_logging()
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"rayloom {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rayloom {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps interpreter shutdown from failing)
        return 0


def _run_job(job: str, args: argparse.Namespace) -> int:
    cfg = compose(job, args.overrides)
    configure_logging()
    JOBS[job].run(cfg)
    return 0


def _print_config(args: argparse.Namespace) -> int:
    print(to_yaml(compose(args.job, args.overrides)), end="")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    return run_doctor(compose("run", args.overrides), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
