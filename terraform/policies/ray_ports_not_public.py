"""Checkov policy CKV_RAYLOOM_1: no security group opens SSH or a Ray port to the internet.

Ray's ports have no business outside the VPC: GCS 6379, dashboard / job API 8265, Ray client
10001, Serve 8000, object manager 8076, dashboard agent 52365 and the worker port range
10002-19999; nor have SSH 22, Serve's HAProxy stats 8404 and Prometheus 9101 listeners, or the
direct-ingress replica ports 30000-31000. Run with `checkov -d terraform --external-checks-dir terraform/policies`.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck
from sg_rules import SUPPORTED_RESOURCES, as_list, ingress_rules, port_range, protocol

RAY_PORTS = [(22, 22), (6379, 6379), (8265, 8265), (10001, 10001), (8000, 8000), (8076, 8076), (52365, 52365),
             (10002, 19999), (8404, 8404), (9101, 9101), (30000, 31000)]
OPEN = {"0.0.0.0/0", "::/0"}


def _opens_ray_port(rule: dict) -> bool:
    cidrs = set(as_list(rule.get("cidr_blocks"))) | set(as_list(rule.get("ipv6_cidr_blocks")))
    cidrs |= set(as_list(rule.get("cidr_ipv4"))) | set(as_list(rule.get("cidr_ipv6")))
    if not cidrs & OPEN:
        return False
    if protocol(rule) in ("-1", "all"):
        return True
    low, high = port_range(rule)
    return any(low <= end and start <= high for start, end in RAY_PORTS)


class RayPortsNotPublic(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure no security group opens SSH or Ray ports (6379, 8265, 10001, 8000, 8076, 52365, "
                 "10002-19999, 8404, 9101, 30000-31000) to 0.0.0.0/0 or ::/0",
            id="CKV_RAYLOOM_1",
            categories=[CheckCategories.NETWORKING],
            supported_resources=SUPPORTED_RESOURCES,
        )

    def scan_resource_conf(self, conf):
        return CheckResult.FAILED if any(_opens_ray_port(rule) for rule in ingress_rules(conf)) else CheckResult.PASSED


check = RayPortsNotPublic()
