"""Ray cluster launcher configs: schema validation, the local fake-GPU config, Terraform outputs.

cluster/aws-gpu.yaml carries `{{tf.<output>}}` placeholders for what Terraform creates (subnets,
security group, instance profiles, bucket, AMI, image repository); `render_from_terraform` fills
them from `terraform output -json`, so the infrastructure and the launcher YAML cannot drift.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from rayloom.config import repo_root
from rayloom.errors import UserError

PLACEHOLDER = re.compile(r"\{\{tf\.([A-Za-z0-9_]+)\}\}")
LOCAL_FAKE_YAML = "cluster/local-fake-gpu.yaml"
AWS_GPU_YAML = "cluster/aws-gpu.yaml"


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"cluster config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping (a Ray cluster config)")
    return data


def validate_launcher_config(config: dict[str, Any], source: str = "cluster config") -> None:
    """Check a launcher config against Ray's own schema (ray/autoscaler/ray-schema.json)."""
    import jsonschema
    from ray.autoscaler._private.util import validate_config

    try:
        validate_config(config)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise UserError(f"{source} fails Ray's cluster config schema at {where}: {exc.message}") from None
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None


def placeholders(config: Any) -> set[str]:
    """Names of every `{{tf.<name>}}` placeholder in a config."""
    found: set[str] = set()

    def _walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                _walk(value)
        elif isinstance(node, list):
            for value in node:
                _walk(value)
        elif isinstance(node, str):
            found.update(PLACEHOLDER.findall(node))

    _walk(config)
    return found


def terraform_values(outputs: dict[str, Any]) -> dict[str, Any]:
    """`terraform output -json` ({name: {value, type, sensitive}}) -> {name: value}."""
    values = {}
    for name, entry in outputs.items():
        if isinstance(entry, dict) and "value" in entry:
            if entry.get("sensitive"):
                continue  # never copied into a config file
            values[name] = entry["value"]
        else:
            values[name] = entry
    return values


def render_from_terraform(config: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Replace every placeholder: a string that is exactly one placeholder takes the output's
    value as is (lists stay lists); placeholders inside longer strings are substituted as text."""
    values = terraform_values(outputs)
    missing = sorted(placeholders(config) - set(values))
    if missing:
        raise UserError(f"terraform outputs lack {', '.join(missing)} (run `terraform output -json` in "
                        "terraform/envs/aws-gpu after `terraform apply`)")

    def _render(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: _render(value) for key, value in node.items()}
        if isinstance(node, list):
            return [_render(value) for value in node]
        if isinstance(node, str):
            whole = PLACEHOLDER.fullmatch(node)
            if whole:
                return copy.deepcopy(values[whole.group(1)])
            return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
        return node

    return _render(config)


def render_local_fake(config: dict[str, Any], *, gcs_address: str, head_num_cpus: int,
                      idle_timeout_minutes: float | None = None) -> dict[str, Any]:
    """Point the fake provider at this head (its GCS address) and size the head node type."""
    rendered = copy.deepcopy(config)
    rendered["provider"]["gcs_address"] = gcs_address
    rendered["available_node_types"]["ray.head.default"]["resources"]["CPU"] = head_num_cpus
    if idle_timeout_minutes is not None:
        rendered["idle_timeout_minutes"] = idle_timeout_minutes
    return rendered


def shipped_config(relative: str) -> Path:
    return repo_root() / relative


class _BlockStrDumper(yaml.SafeDumper):
    """Multi-line strings (an embedded serveConfigV2 / runtimeEnvYAML) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrDumper.add_representer(str, _represent_str)


def dump_yaml(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_BlockStrDumper, sort_keys=False, default_flow_style=False, width=110)


def write_yaml(config: dict[str, Any], path: Path, header: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + dump_yaml(config))
    return path


def load_terraform_outputs(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"terraform output file {path} does not exist "
                        "(write it with `terraform -chdir=terraform/envs/aws-gpu output -json > tf-outputs.json`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not the JSON of `terraform output -json`: {exc}") from None
