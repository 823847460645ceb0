"""`rayloom serve <verb>`: operate a running endpoint - status, publish/unpublish, promote, rollback.

`rayloom serve [overrides]` deploys (a rollout when the app already runs on cluster.address);
these verbs act on that running app and take the same Hydra overrides (to name the app, cluster,
storage, model):

  status      Serve's view (app, deployments, replicas by state) and the active/previous releases
  publish     upload a LoRA adapter to serve.lora_dynamic_path: callable as "<model>:<name>" at once
  unpublish   remove a published adapter
  promote     the deploy gate (eval.gate on the model's latest evaluation, lineage unchanged), the
              canary report when a canary runs, then a rollout of the configured model; the
              replaced release stays recorded
  rollback    roll back to the previous recorded release (one command, a rollout like any other)

Promote and rollback need a Ray cluster that outlives the command (cluster.address); status does too.
"""

from __future__ import annotations

import argparse
from functools import partial

from rayloom.config import RayloomConfig, compose
from rayloom.errors import UserError
from rayloom.eval import check_deploy_gate
from rayloom.models.presets import cache_root
from rayloom.runtime import ray_session
from rayloom.serve import adapter_store, release
from rayloom.serve.auth import resolve_auth
from rayloom.serve.deploy import Endpoint, announce, deploy
from rayloom.serve.deployment_plan import is_embedded, plan_serving

VERBS = ("status", "publish", "unpublish", "promote", "rollback")


def add_serve_admin_command(commands) -> argparse.ArgumentParser:
    """Add `rayloom serve-admin <verb>` (also reachable as `rayloom serve <verb>`) to the CLI tree."""
    parser = commands.add_parser("serve-admin", help="operate a running endpoint: " + ", ".join(VERBS),
                                 description=__doc__.split("\n\n")[0],
                                 epilog="also spelled `rayloom serve <verb> ...`; `rayloom serve [overrides]` "
                                        "deploys or rolls out", formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for verb, help_text in (("status", "versions, replicas and health of the app"),
                            ("promote", "deploy gate, then roll the configured model out"),
                            ("rollback", "roll back to the previous release")):
        sub = verbs.add_parser(verb, help=help_text, description=help_text)
        sub.add_argument("overrides", nargs="*", default=(), help="Hydra overrides, e.g. cluster.address=auto")
        sub.set_defaults(run=partial(_run, verb))
    publish_parser = verbs.add_parser("publish", help="upload a LoRA adapter to the endpoint's adapter store")
    publish_parser.add_argument("source", help="adapter directory or s3:// prefix (peft LoRA)")
    publish_parser.add_argument("--name", required=True, help='served as model "<model>:<name>"')
    publish_parser.add_argument("overrides", nargs="*", default=(), help="e.g. serve.lora_dynamic_path=s3://b/adapters")
    publish_parser.set_defaults(run=partial(_run, "publish"))
    unpublish_parser = verbs.add_parser("unpublish", help="remove a published adapter")
    unpublish_parser.add_argument("name")
    unpublish_parser.add_argument("overrides", nargs="*", default=())
    unpublish_parser.set_defaults(run=partial(_run, "unpublish"))
    return parser


def _run(verb: str, args: argparse.Namespace) -> int:
    cfg = compose("serve", list(args.overrides))
    if verb == "publish":
        uri = adapter_store.publish(cfg.serve, args.source, args.name, cache_dir=plan_cache(cfg))
        print(f"published {args.name} at {uri}: call it as model \"<model>:{args.name}\"", flush=True)
    elif verb == "unpublish":
        adapter_store.unpublish(cfg.serve, args.name)
        print(f"unpublished {args.name}", flush=True)
    elif verb == "status":
        print(status(cfg), flush=True)
    elif verb == "promote":
        promote(cfg)
    else:
        rollback(cfg)
    return 0


def plan_cache(cfg: RayloomConfig) -> str:
    return str(cache_root(cfg.model) / "serve-adapters")


def _need_cluster(cfg: RayloomConfig, verb: str) -> None:
    if is_embedded(cfg.cluster):
        raise UserError(f"`rayloom serve {verb}` acts on an app running on a Ray cluster: set cluster.address "
                        "(e.g. cluster.address=auto on the head node)")


def status(cfg: RayloomConfig) -> str:
    _need_cluster(cfg, "status")
    releases = release.read_releases(cfg)
    with ray_session(cfg.cluster, cfg.storage):
        live = release.app_status(cfg.serve.app_name)
        report = canary_report(releases)
    text = release.format_status(cfg.serve.app_name, live, releases)
    return f"{text}\n{report}" if report else text


def canary_report(releases: list[dict]) -> str | None:
    """Both versions' requests, error rate and latency when the active release runs a canary
    (rayloom.serve.canary); None otherwise. Needs a connected Ray."""
    active = releases[-1] if releases else {}
    if not active.get("args", {}).get("serve", {}).get("canary_model_path"):
        return None
    from rayloom.serve.canary import format_report, read_stats  # here: httpx and Ray, for this report only

    return format_report(read_stats(active["model_id"]))


def rollout(cfg: RayloomConfig, *, action: str) -> Endpoint:
    """Deploy `cfg` onto the running app (new replicas healthy before old ones stop) and record it."""
    auth = resolve_auth(cfg.serve.require_api_key, cfg.serve.api_key_env, cfg.serve.api_key_file)
    with ray_session(cfg.cluster, cfg.storage):
        plan = plan_serving(cfg)
        endpoint = deploy(cfg, auth=auth, plan=plan)
        release.record_release(cfg, plan, endpoint.version, action=action)
        announce(cfg, endpoint, plan)
    return endpoint


def promote(cfg: RayloomConfig) -> Endpoint:
    """Refuse unless the model's latest evaluation passes eval.gate (GateFailed), then roll it out."""
    _need_cluster(cfg, "promote")
    if not (cfg.eval.gate.min or cfg.eval.gate.max):
        raise UserError("`rayloom serve promote` promotes only through the deploy gate, and eval.gate sets no "
                        "thresholds: use eval=gated or add '+eval.gate.min={<task>/<metric>:<value>}'")
    check_deploy_gate(cfg)
    with ray_session(cfg.cluster, cfg.storage):
        report = canary_report(release.read_releases(cfg))
    if report:  # what the candidate did beside the served model, before it replaces it
        print(report, flush=True)
    return rollout(cfg, action="promote")


def rollback(cfg: RayloomConfig) -> Endpoint:
    """Roll the app back to the release before the active one."""
    _need_cluster(cfg, "rollback")
    previous = release.previous_release(release.read_releases(cfg))
    print(f"rolling {cfg.serve.app_name} back to {previous['version']} (model {previous['model_id']} from "
          f"{previous['model_source']})", flush=True)
    return rollout(release.config_of(previous, cfg), action="rollback")
