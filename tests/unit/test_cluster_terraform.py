"""Terraform checks that need no network: formatting (when the binary exists), parsing with
python-hcl2, the rules that matter read from the code, and checkov policies (from .venv-tools,
which `make setup` makes): no SSH or Ray port open to the internet, encryption on, IMDSv2, pinned versions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from helpers import REPO_ROOT

TERRAFORM = REPO_ROOT / "terraform"
ENV_ROOT = TERRAFORM / "envs" / "aws-gpu"
CHECKOV = REPO_ROOT / ".venv-tools" / "bin" / "checkov"
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
RAY_PORTS = (22, 6379, 8265, 10001, 8000, 8076, 52365)


def _clean(node):
    """python-hcl2 keeps HCL's quotes and adds bookkeeping keys; drop both."""
    if isinstance(node, dict):
        return {_clean(k): _clean(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def _parse(path: Path) -> dict:
    with open(path) as handle:
        return _clean(hcl2.load(handle))


def _tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


def _resources(kind: str) -> list[tuple[str, dict]]:
    found = []
    for path in _tf_files():
        for block in _parse(path).get("resource", []):
            for rtype, named in block.items():
                if rtype == kind:
                    found.extend((f"{path.relative_to(TERRAFORM)}:{name}", body) for name, body in named.items())
    return found


def _as_list(value) -> list:
    """A variable reference (`cidr_blocks = var.x`) parses as one string, a literal list as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ingress_rules(body: dict) -> list[dict]:
    rules = list(body.get("ingress", []))
    for dynamic in body.get("dynamic", []):
        for label, spec in dynamic.items():
            if label == "ingress":
                rules.extend(spec["content"])
    return rules


def test_every_file_parses_and_the_layout_is_modules_plus_an_env_root():
    files = _tf_files()
    assert files
    for path in files:
        _parse(path)
    modules = {p.name for p in (TERRAFORM / "modules").iterdir() if p.is_dir()}
    assert {"network", "storage", "iam", "security"} <= modules
    sources = {m["source"] for block in _parse(ENV_ROOT / "main.tf")["module"] for m in block.values()}
    assert {f"../../modules/{name}" for name in ("network", "storage", "iam", "security")} <= sources


def test_terraform_fmt_when_the_binary_exists(tmp_path):
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed here; python-hcl2 parsing and checkov still run")
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(tmp_path / "none.tfrc"), CHECKPOINT_DISABLE="1")
    (tmp_path / "none.tfrc").write_text("")
    out = subprocess.run([binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_terraform_and_provider_versions_are_pinned():
    for path in TERRAFORM.rglob("versions.tf"):
        terraform = _parse(path)["terraform"][0]
        assert terraform["required_version"], path
        for provider in terraform["required_providers"]:
            for name, spec in provider.items():
                assert re.fullmatch(r"\d+\.\d+\.\d+", spec["version"]), f"{path}: {name} must be pinned exactly"
                assert spec["source"] == f"hashicorp/{name}"
    for block in _parse(ENV_ROOT / "main.tf")["module"]:
        for name, module in block.items():
            # Local modules are versioned with this repository; a registry module needs a pin.
            assert module["source"].startswith("../") or "version" in module, name


def test_bucket_is_encrypted_versioned_and_private():
    [(_, sse)] = _resources("aws_s3_bucket_server_side_encryption_configuration")
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    [(_, versioning)] = _resources("aws_s3_bucket_versioning")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    [(_, block)] = _resources("aws_s3_bucket_public_access_block")
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                          "restrict_public_buckets"))
    for name, key in _resources("aws_kms_key"):
        assert key["enable_key_rotation"] is True, name
    [(_, ecr)] = _resources("aws_ecr_repository")
    assert ecr["image_tag_mutability"] == "IMMUTABLE"


def test_instances_require_imdsv2_and_encrypted_disks():
    for name, instance in _resources("aws_instance"):
        assert instance["metadata_options"][0]["http_tokens"] == "required", name
        assert instance["root_block_device"][0]["encrypted"] is True, name


def test_no_ingress_from_the_internet_and_ray_ports_stay_in_the_vpc():
    groups = _resources("aws_security_group")
    assert groups
    for name, group in groups:
        for rule in _ingress_rules(group):
            cidrs = set(_as_list(rule.get("cidr_blocks"))) | set(_as_list(rule.get("ipv6_cidr_blocks")))
            assert not cidrs & OPEN_CIDRS, f"{name}: {rule['description']}"
            low, high = rule["from_port"], rule["to_port"]
            opens_ray_port = isinstance(low, int) and any(low <= p <= high for p in RAY_PORTS)
            if opens_ray_port or not isinstance(low, int):
                sources = cidrs | set(_as_list(rule.get("security_groups")))
                assert rule.get("self") is True or sources <= {"${var.vpc_cidr_block}", "${ingress.value}"} \
                    or sources == {"${var.admin_cidr_blocks}"}, f"{name}: {rule['description']}"
    for kind in ("aws_security_group_rule", "aws_vpc_security_group_ingress_rule"):
        assert not _resources(kind), f"use inline rules in aws_security_group, not {kind}"


def test_admin_cidrs_reject_the_whole_internet():
    variables = {name: spec for block in _parse(TERRAFORM / "modules" / "security" / "variables.tf")["variable"]
                 for name, spec in block.items()}
    condition = variables["admin_cidr_blocks"]["validation"][0]["condition"]
    assert "0.0.0.0/0" in condition and "::/0" in condition


def test_node_policy_is_scoped_to_the_bucket():
    iam = _parse(TERRAFORM / "modules" / "iam" / "main.tf")
    documents = {name: doc for block in iam["data"] for kind, named in block.items()
                 if kind == "aws_iam_policy_document" for name, doc in named.items()}
    for statement in documents["node"]["statement"]:
        actions = statement["actions"]
        if any(a.startswith(("s3:", "kms:")) for a in actions):
            assert all(r.startswith(("${var.bucket_arn}", "${var.kms_key_arn}")) for r in statement["resources"]), \
                statement["sid"]
        if statement["resources"] == ["*"]:
            assert actions == ["ecr:GetAuthorizationToken"], statement["sid"]
    for statement in documents["autoscaler"]["statement"]:
        if statement["resources"] == ["*"]:
            assert all(a.startswith("ec2:Describe") for a in statement["actions"]), statement["sid"]


def _checkov(*args: str) -> dict:
    if not CHECKOV.is_file():
        pytest.skip("checkov is not installed in .venv-tools: run `make setup` (scripts/bootstrap.sh makes that "
                    "separate venv from requirements/tools.lock; checkov's pins clash with the main one)")
    out = subprocess.run([str(CHECKOV), *args, "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                         env=dict(os.environ, BC_SKIP_MAPPING="TRUE"))
    assert out.returncode in (0, 1), out.stderr[-3000:]
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    summary: dict = {"passed": 0, "failed": 0, "failed_checks": [], "passed_ids": set()}
    for item in reports:
        if "summary" not in item:  # nothing to scan for this framework
            continue
        summary["passed"] += item["summary"]["passed"]
        summary["failed"] += item["summary"]["failed"]
        results = item.get("results", {})
        summary["failed_checks"] += [(c["check_id"], c["resource"]) for c in results.get("failed_checks", [])]
        summary["passed_ids"] |= {c["check_id"] for c in results.get("passed_checks", [])}
    return summary


@pytest.fixture(scope="module")
def terraform_scan() -> dict:
    return _checkov("-d", "terraform", "--framework", "terraform", "--external-checks-dir", "terraform/policies")


def test_checkov_finds_no_violations_in_terraform(terraform_scan):
    assert terraform_scan["failed"] == 0, terraform_scan["failed_checks"]
    assert terraform_scan["passed"] >= 100


# The policies that matter here: SSH / Ray ports / all ports not open to the internet, bucket
# encrypted with KMS, versioned, public access blocked, IMDSv2, encrypted disks, key rotation,
# ECR encrypted, default security group closed, flow logs on. Each must apply and pass.
KEY_POLICIES = ["CKV_RAYLOOM_1", "CKV_AWS_24", "CKV_AWS_277", "CKV_AWS_145", "CKV_AWS_21", "CKV2_AWS_6",
                "CKV_AWS_79", "CKV_AWS_8", "CKV_AWS_7", "CKV_AWS_136", "CKV2_AWS_12", "CKV2_AWS_11"]


def test_key_policies_apply_and_pass(terraform_scan):
    assert set(KEY_POLICIES) <= terraform_scan["passed_ids"], set(KEY_POLICIES) - terraform_scan["passed_ids"]


def test_ray_ports_policy_catches_an_open_dashboard(tmp_path):
    (tmp_path / "main.tf").write_text("""
resource "aws_security_group" "open_dashboard" {
  name = "bad"
  ingress {
    description = "dashboard for everyone"
    protocol    = "tcp"
    from_port   = 8265
    to_port     = 8265
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "aws_vpc_security_group_ingress_rule" "open_worker_ports" {
  security_group_id = "sg-1"
  ip_protocol       = "tcp"
  from_port         = 12000
  to_port           = 12100
  cidr_ipv4         = "0.0.0.0/0"
}
resource "aws_vpc_security_group_ingress_rule" "https_is_fine" {
  security_group_id = "sg-1"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
""")
    summary = _checkov("-d", str(tmp_path), "--framework", "terraform",
                       "--external-checks-dir", str(TERRAFORM / "policies"), "--check", "CKV_RAYLOOM_1")
    assert sorted(r for _, r in summary["failed_checks"]) == [
        "aws_security_group.open_dashboard", "aws_vpc_security_group_ingress_rule.open_worker_ports"]
    assert summary["passed"] == 1


def test_checkov_passes_the_node_image():
    summary = _checkov("-f", "cluster/Dockerfile", "--framework", "dockerfile")
    assert summary["failed"] == 0, summary["failed_checks"]


# --- least privilege and spot (security review finding 9; issue #16 item 4) ------------------------------

def _policy_documents() -> dict:
    iam = _parse(TERRAFORM / "modules" / "iam" / "main.tf")
    return {name: doc for block in iam["data"] for kind, named in block.items()
            if kind == "aws_iam_policy_document" for name, doc in named.items()}


def _conditions(statement: dict) -> dict[str, dict]:
    return {c["variable"]: c for c in statement.get("condition", [])}


def test_autoscaler_launches_only_constrained_instances():
    statements = _policy_documents()["autoscaler"]["statement"]
    launches = [s for s in statements if "ec2:RunInstances" in s["actions"] and s.get("effect", "Allow") == "Allow"]
    assert launches
    for statement in launches:
        resources = statement["resources"]
        text = json.dumps(resources)
        for kind in ("subnet/*", "security-group/*", "image/*", "network-interface/*", "instance/*", "volume/*"):
            if kind in text:
                assert statement.get("condition"), f"{statement['sid']}: {kind} without a condition"
    [instances] = [s for s in launches if "instance/*" in json.dumps(s["resources"])]
    conditions = _conditions(instances)
    assert conditions["ec2:InstanceType"]["values"] == "${var.worker_instance_types}"
    assert conditions["aws:RequestTag/ray-cluster-name"]["values"] == ["${var.ray_cluster_name}"]
    assert conditions["ec2:MetadataHttpTokens"]["values"] == ["required"]
    [interfaces] = [s for s in launches if "network-interface/*" in json.dumps(s["resources"])]
    assert set(_conditions(interfaces)) == {"ec2:Subnet", "ec2:AssociatePublicIpAddress"}
    [parts] = [s for s in launches if "security-group/" in json.dumps(s["resources"])]
    assert "local.subnet_arns" in json.dumps(parts["resources"]) and "subnet/*" not in json.dumps(parts["resources"])
    assert "security-group/${var.ray_nodes_security_group_id}" in json.dumps(parts["resources"])
    [pass_role] = [s for s in statements if "iam:PassRole" in s["actions"]]
    assert _conditions(pass_role)["iam:PassedToService"]["values"] == ["ec2.amazonaws.com"]


def test_spot_is_an_option_of_the_iam_module():
    statements = _policy_documents()["autoscaler"]
    [deny] = [d["statement"] for d in statements.get("dynamic", []) if "statement" in d]
    assert deny["for_each"] == "${var.enable_spot ? [] : [1]}"
    assert deny["content"][0]["effect"] == "Deny"
    assert _conditions(deny["content"][0])["ec2:InstanceMarketType"]["values"] == ["spot"]
    [(_, linked)] = _resources("aws_iam_service_linked_role")
    assert linked["aws_service_name"] == "spot.amazonaws.com"
    env_vars = {name: spec for block in _parse(ENV_ROOT / "variables.tf")["variable"] for name, spec in block.items()}
    assert env_vars["enable_spot"]["default"] is True


def test_worker_instance_types_are_the_launchers_worker_types():
    import yaml

    config = yaml.safe_load((REPO_ROOT / "cluster" / "aws-gpu.yaml").read_text())
    workers = {spec["node_config"]["InstanceType"] for name, spec in config["available_node_types"].items()
               if name != config["head_node_type"]}
    env_vars = {name: spec for block in _parse(ENV_ROOT / "variables.tf")["variable"] for name, spec in block.items()}
    assert set(env_vars["worker_instance_types"]["default"]) == workers


def test_serving_nodes_cannot_write_or_delete_bucket_objects():
    import yaml

    serve = _policy_documents()["serve_node"]["statement"]
    actions = {a for s in serve for a in s["actions"]}
    assert not {a for a in actions if a.startswith("s3:") and not a.startswith(("s3:Get", "s3:List"))}, actions
    assert not {a for a in actions if a.startswith("kms:") and a not in ("kms:Decrypt", "kms:DescribeKey")}, actions
    config = yaml.safe_load((REPO_ROOT / "cluster" / "aws-gpu.yaml").read_text())
    for name, spec in config["available_node_types"].items():
        profile = spec["node_config"]["IamInstanceProfile"]["Arn"]
        if spec.get("labels", {}).get("rayloom.io/pool") == "serve":
            assert profile == "{{tf.serve_instance_profile_arn}}", name


def test_gcs_and_client_ports_only_from_the_nodes_own_group():
    [(_, group)] = [(n, g) for n, g in _resources("aws_security_group") if n.endswith(":ray_nodes")]
    for rule in _ingress_rules(group):
        low, high = rule["from_port"], rule["to_port"]
        assert isinstance(low, int) and isinstance(high, int), f"{rule['description']}: literal ports, checkable"
        if any(low <= port <= high for port in (6379, 10001)):
            assert rule.get("self") is True and not rule.get("cidr_blocks") and not rule.get("security_groups"), \
                rule["description"]


def test_internal_ports_policy_applies_and_passes(terraform_scan):
    assert "CKV_RAYLOOM_2" in terraform_scan["passed_ids"]


def test_internal_ports_policy_catches_a_vpc_wide_gcs(tmp_path):
    (tmp_path / "main.tf").write_text("""
resource "aws_security_group" "vpc_wide_gcs" {
  name = "bad"
  ingress {
    description = "GCS for the VPC"
    protocol    = "tcp"
    from_port   = 6379
    to_port     = 6379
    cidr_blocks = ["10.0.0.0/16"]
  }
}
resource "aws_security_group" "self_only" {
  name = "good"
  ingress {
    description = "node to node"
    protocol    = "tcp"
    from_port   = 0
    to_port     = 65535
    self        = true
  }
  ingress {
    description = "dashboard for the VPC"
    protocol    = "tcp"
    from_port   = 8265
    to_port     = 8265
    cidr_blocks = ["10.0.0.0/16"]
  }
}
resource "aws_vpc_security_group_ingress_rule" "client_port_from_elsewhere" {
  security_group_id            = "sg-1"
  ip_protocol                  = "tcp"
  from_port                    = 10001
  to_port                      = 10001
  referenced_security_group_id = "sg-2"
}
""")
    summary = _checkov("-d", str(tmp_path), "--framework", "terraform",
                       "--external-checks-dir", str(TERRAFORM / "policies"), "--check", "CKV_RAYLOOM_2")
    assert sorted(r for _, r in summary["failed_checks"]) == [
        "aws_security_group.vpc_wide_gcs", "aws_vpc_security_group_ingress_rule.client_port_from_elsewhere"]
    assert summary["passed"] == 1
