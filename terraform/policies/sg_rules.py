"""Shared reading of security-group rules for rayloom's checkov policies (not a check itself).

checkov puts this folder on sys.path while it loads the policies (and executes every .py here,
this one included, which registers nothing), so the policies import it by its plain name.
"""


def first(value, default=None):
    """HCL attributes arrive as one-element lists; the value, or `default` when absent."""
    if isinstance(value, list):
        return value[0] if value else default
    return value if value is not None else default


def as_list(value) -> list:
    value = first(value, []) if isinstance(value, list) and value and isinstance(value[0], list) else value
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def has(value) -> bool:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return bool(value)


def protocol(rule: dict) -> str:
    return str(first(rule.get("protocol", rule.get("ip_protocol")), "tcp"))


def port_range(rule: dict) -> tuple[int, int]:
    """(from_port, to_port), all ports when a bound is missing or not a number."""
    return _port(rule.get("from_port"), 0), _port(rule.get("to_port"), 65535)


def _port(value, default: int) -> int:
    try:
        return int(first(value, default))
    except (TypeError, ValueError):
        return default


def ingress_rules(conf: dict) -> list[dict]:
    """The ingress rules of a resource: an aws_security_group's inline rules, or the rule itself
    (aws_security_group_rule / aws_vpc_security_group_ingress_rule); none for an egress rule."""
    if "ingress" in conf:
        return [rule for rule in conf["ingress"] if isinstance(rule, dict)]
    if first(conf.get("type")) == "egress":
        return []
    return [conf]


SUPPORTED_RESOURCES = ["aws_security_group", "aws_security_group_rule", "aws_vpc_security_group_ingress_rule"]
