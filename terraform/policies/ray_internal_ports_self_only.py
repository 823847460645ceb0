"""Checkov policy CKV_RAYLOOM_2: Ray's GCS (6379) and Ray client (10001) ports are open only inside the
Ray nodes' own security group (`self = true`), never to a CIDR range or another group.

GCS holds the cluster's state and the client port runs arbitrary code; both are for the Ray nodes
themselves. The dashboard / job API (8265) and Serve (8000) are the ports callers elsewhere in the
VPC use. Run with `checkov -d terraform --external-checks-dir terraform/policies`.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

INTERNAL_PORTS = (6379, 10001)
SOURCES = ("cidr_blocks", "ipv6_cidr_blocks", "security_groups", "prefix_list_ids", "source_security_group_id",
           "cidr_ipv4", "cidr_ipv6", "prefix_list_id")


def _first(value, default=None):
    if isinstance(value, list):
        return value[0] if value else default
    return value if value is not None else default


def _port(value, default):
    try:
        return int(_first(value, default))
    except (TypeError, ValueError):
        return default


def _has(value) -> bool:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return bool(value)


def _opens_internal_port(rule: dict) -> bool:
    protocol = str(_first(rule.get("protocol", rule.get("ip_protocol")), "tcp"))
    if protocol not in ("-1", "all", "tcp", "6"):
        return False
    if protocol in ("-1", "all"):
        return True
    low, high = _port(rule.get("from_port"), 0), _port(rule.get("to_port"), 65535)
    return any(low <= port <= high for port in INTERNAL_PORTS)


def _self_only(rule: dict) -> bool:
    if any(_has(rule.get(key)) for key in SOURCES):
        return False
    if _has(rule.get("referenced_security_group_id")):
        return _first(rule.get("referenced_security_group_id")) == _first(rule.get("security_group_id"))
    return _first(rule.get("self")) is True


class RayInternalPortsSelfOnly(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Ray GCS (6379) and Ray client (10001) ingress comes only from the same security group (self)",
            id="CKV_RAYLOOM_2",
            categories=[CheckCategories.NETWORKING],
            supported_resources=["aws_security_group", "aws_security_group_rule",
                                 "aws_vpc_security_group_ingress_rule"],
        )

    def scan_resource_conf(self, conf):
        if "ingress" in conf:  # aws_security_group with inline rules
            rules = [rule for rule in conf["ingress"] if isinstance(rule, dict)]
        elif _first(conf.get("type")) == "egress":
            return CheckResult.PASSED
        else:
            rules = [conf]
        bad = [rule for rule in rules if _opens_internal_port(rule) and not _self_only(rule)]
        return CheckResult.FAILED if bad else CheckResult.PASSED


check = RayInternalPortsSelfOnly()
