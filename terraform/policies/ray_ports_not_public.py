"""Checkov policy CKV_RAYLOOM_1: no security group opens SSH or a Ray port to the internet.

Ray's ports have no business outside the VPC: GCS 6379, dashboard / job API 8265, Ray client
10001, Serve 8000, object manager 8076, dashboard agent 52365 and the worker port range
10002-19999; nor have SSH 22, Serve's HAProxy stats 8404 and Prometheus 9101 listeners, or the
direct-ingress replica ports 30000-31000. Run with `checkov -d terraform --external-checks-dir terraform/policies`.
"""

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

RAY_PORTS = [(22, 22), (6379, 6379), (8265, 8265), (10001, 10001), (8000, 8000), (8076, 8076), (52365, 52365),
             (10002, 19999), (8404, 8404), (9101, 9101), (30000, 31000)]
OPEN = {"0.0.0.0/0", "::/0"}


def _first(value, default=None):
    if isinstance(value, list):
        return value[0] if value else default
    return value if value is not None else default


def _as_list(value):
    value = _first(value, []) if isinstance(value, list) and value and isinstance(value[0], list) else value
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _port(value, default):
    value = _first(value, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _opens_ray_port(rule: dict) -> bool:
    cidrs = set(_as_list(rule.get("cidr_blocks"))) | set(_as_list(rule.get("ipv6_cidr_blocks")))
    cidrs |= set(_as_list(rule.get("cidr_ipv4"))) | set(_as_list(rule.get("cidr_ipv6")))
    if not cidrs & OPEN:
        return False
    protocol = str(_first(rule.get("protocol", rule.get("ip_protocol")), "tcp"))
    if protocol in ("-1", "all"):
        return True
    low, high = _port(rule.get("from_port"), 0), _port(rule.get("to_port"), 65535)
    return any(low <= end and start <= high for start, end in RAY_PORTS)


class RayPortsNotPublic(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure no security group opens SSH or Ray ports (6379, 8265, 10001, 8000, 8076, 52365, "
                 "10002-19999, 8404, 9101, 30000-31000) to 0.0.0.0/0 or ::/0",
            id="CKV_RAYLOOM_1",
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
        return CheckResult.FAILED if any(_opens_ray_port(rule) for rule in rules) else CheckResult.PASSED


check = RayPortsNotPublic()
