"""Checkov policy CKV_RAYLOOM_2: Ray's GCS (6379) and Ray client (10001) ports are open only inside the
Ray nodes' own security group (`self = true`), never to a CIDR range or another group.

GCS holds the cluster's state and the client port runs arbitrary code; both are for the Ray nodes
themselves. The dashboard / job API (8265) and Serve (8000) are the ports callers elsewhere in the
VPC use. Run with `checkov -d terraform --external-checks-dir terraform/policies`.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from sg_rules import SUPPORTED_RESOURCES, first, has, ingress_rules, port_range, protocol

INTERNAL_PORTS = (6379, 10001)
SOURCES = ("cidr_blocks", "ipv6_cidr_blocks", "security_groups", "prefix_list_ids", "source_security_group_id",
           "cidr_ipv4", "cidr_ipv6", "prefix_list_id")


def _opens_internal_port(rule: dict) -> bool:
    proto = protocol(rule)
    if proto not in ("-1", "all", "tcp", "6"):
        return False
    if proto in ("-1", "all"):
        return True
    low, high = port_range(rule)
    return any(low <= port <= high for port in INTERNAL_PORTS)


def _self_only(rule: dict) -> bool:
    if any(has(rule.get(key)) for key in SOURCES):
        return False
    if has(rule.get("referenced_security_group_id")):
        return first(rule.get("referenced_security_group_id")) == first(rule.get("security_group_id"))
    return first(rule.get("self")) is True


class RayInternalPortsSelfOnly(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Ray GCS (6379) and Ray client (10001) ingress comes only from the same security group (self)",
            id="CKV_RAYLOOM_2",
            categories=[CheckCategories.NETWORKING],
            supported_resources=SUPPORTED_RESOURCES,
        )

    def scan_resource_conf(self, conf):
        bad = [rule for rule in ingress_rules(conf) if _opens_internal_port(rule) and not _self_only(rule)]
        return CheckResult.FAILED if bad else CheckResult.PASSED


check = RayInternalPortsSelfOnly()
