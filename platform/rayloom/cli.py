"""`rayloom <command> [hydra overrides...]`.

Every job command composes the Hydra tree (conf/<job>.yaml + overrides) into one typed config and
calls one library function (see rayloom.entry). User mistakes exit 2 with a one-paragraph message
and no traceback; capabilities that are not built yet exit 3 and say so.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rayloom.errors import NotBuiltError, UserError

JOB_COMMANDS = {
    "run": "the main job: build the tiny model and run every built stage (data, train, align, eval, serve)",
    "data": "prepare data with Ray Data: read, clean, dedup, tokenize, pack, write shards",
    "train": "train with Ray Train + DeepSpeed ZeRO (pre-training, SFT, LoRA, alignment)",
    "tune": "sweep hyperparameters with Ray Tune over real training runs",
    "eval": "evaluate a checkpoint or endpoint: metrics, safety probes, report, deploy gate",
    "serve": "serve a model with Ray Serve + vLLM behind an OpenAI-compatible endpoint",
}
# Tool commands parse their own arguments (`rayloom <command> --help`).
OTHER_COMMANDS = {
    "chat": "a terminal chat client (streaming) for any rayloom / OpenAI-compatible endpoint",
    "submit": "submit a job to cluster.address as a Ray job, follow its logs, return its exit status",
    "jobs": "list, inspect, follow or stop Ray jobs on cluster.address",
    "cluster": "start/stop a local autoscaling cluster with fake GPU nodes (cluster up --local-fake)",
    "export": "merge LoRA adapters / consolidate a checkpoint into a Hugging Face directory vLLM serves",
}

EPILOG = """examples:
  rayloom config train model=tiny train.lr=3e-4     print the composed, validated config
  rayloom run                                       the end-to-end demo on the embedded Ray
  rayloom train deepspeed=zero3_offload peft=lora   override any group or key, Hydra style
  rayloom doctor                                    what this machine has and whether it works
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayloom",
        description="Ray-native LLM platform: one Hydra config tree from data to a served endpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rayloom {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, help_text in JOB_COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.lr=3e-4 deepspeed=zero3")
    config = commands.add_parser("config", help="print a job's composed, resolved config",
                                 description="Compose conf/<job>.yaml with overrides, validate it and print it.")
    config.add_argument("job", help=f"one of: {', '.join(JOB_COMMANDS)}")
    config.add_argument("overrides", nargs="*")
    doctor = commands.add_parser("doctor", help="report versions, hardware, engines, Ray and S3 readiness",
                                 description="Report versions, hardware, whether vLLM/DeepSpeed ops load, "
                                             "Ray reachability and whether S3 credentials are present.")
    doctor.add_argument("--quick", action="store_true", help="skip loading vLLM and building DeepSpeed ops")
    doctor.add_argument("overrides", nargs="*")
    for name, help_text in OTHER_COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Tool commands parse their own options (argparse's REMAINDER would swallow a leading one).
    if argv and argv[0] in OTHER_COMMANDS:
        args = argparse.Namespace(command=argv[0], args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    command = args.command
    try:
        return _dispatch(command, args)
    except UserError as exc:
        print(f"rayloom {command}: error: {exc}", file=sys.stderr)
        return 2
    except NotBuiltError as exc:
        print(f"rayloom {command}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"rayloom {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps interpreter shutdown from failing)
        return 0


def _dispatch(command: str, args: argparse.Namespace) -> int:
    from rayloom.config import compose, to_yaml
    from rayloom.entry import command_function, run_job
    from rayloom.log_setup import configure_logging

    if command in OTHER_COMMANDS:
        tool = command_function(command)
        configure_logging()
        return int(tool(list(args.args)) or 0)
    if command == "config":
        print(to_yaml(compose(args.job, args.overrides)), end="")
        return 0
    if command == "doctor":
        from rayloom.doctor import run_doctor

        return run_doctor(compose("run", args.overrides), quick=args.quick)
    cfg = compose(command, args.overrides)
    configure_logging()
    run_job(command, cfg)
    return 0


def _version() -> str:
    from rayloom import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
