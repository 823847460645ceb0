"""cluster/grafana/rayloom-serving.json is a valid Grafana dashboard, and every metric it queries is one
that the installed Ray Serve / Ray Serve LLM / vLLM define, in the form Ray's Prometheus export gives it
(`ray_` prefix, vLLM's `:` as `_`, `_total` on counters, `_bucket`/`_sum`/`_count` on histograms).
A metric renamed or dropped in a Ray or vLLM upgrade fails here, not on an operator's screen."""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

import pytest
from helpers import REPO_ROOT

DASHBOARD = REPO_ROOT / "cluster" / "grafana" / "rayloom-serving.json"
METRIC_CALLS = {"Counter": "counter", "Histogram": "histogram", "Gauge": "gauge",
                "_counter_cls": "counter", "_histogram_cls": "histogram", "_gauge_cls": "gauge"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}
PROMQL_WORDS = {"sum", "rate", "max", "min", "avg", "by", "histogram_quantile", "label_values", "on", "without",
                "increase", "irate", "count", "topk", "clamp_min", "le", "group_left", "and", "or", "unless"}


def _site_packages() -> Path:
    import ray

    return Path(ray.__file__).resolve().parent.parent


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def _metric_names(expr: str) -> set[str]:
    """Identifiers used as series selectors: `name{...}` or `label_values(name, label)`."""
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))
    names |= set(re.findall(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,", expr))
    names |= set(re.findall(r"\(\s*(ray_[a-z0-9_]+)\s*\)", expr))  # a bare selector: max by (...) (name)
    return names - PROMQL_WORDS


@functools.cache
def _defined_metrics() -> list[tuple[re.Pattern, str, str]]:
    """(exported-name pattern without suffix, kind, where) for every metric Ray Serve, Ray Serve LLM and
    vLLM define: the name argument of Counter/Histogram/Gauge calls (an f-string field matches one word,
    e.g. serve_num_{protocol}_requests -> serve_num_http_requests)."""
    root = _site_packages()
    files = [*(root / "ray" / "serve").rglob("*.py"), *(root / "ray" / "llm").rglob("*.py"),
             *(root / "vllm" / "v1" / "metrics").glob("*.py")]
    found = []
    for path in files:
        if "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            kind = METRIC_CALLS.get(func)
            if kind is None:
                continue
            arg = next((k.value for k in node.keywords if k.arg == "name"), node.args[0] if node.args else None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                pattern = re.escape(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                pattern = "".join(re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z0-9]+"
                                  for v in arg.values)
            else:
                continue
            # Ray's export: `ray_` prefix, characters Prometheus disallows (vLLM's ':') become '_'.
            exported = "ray_" + pattern.replace(":", "_")
            found.append((re.compile(exported), kind, f"{path.relative_to(root)}:{node.lineno}"))
    return found


def _definition(name: str) -> tuple[str, str] | None:
    for pattern, kind, where in _defined_metrics():
        for suffix in SUFFIXES[kind]:
            if name.endswith(suffix) and pattern.fullmatch(name[: len(name) - len(suffix)] if suffix else name):
                return kind, where
    return None


def test_it_is_a_grafana_dashboard():
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"] == "rayloom-serving"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "table", "stat", "heatmap"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels}
    assert len(positions) == len(panels), "no two panels at the same place"


def test_datasource_variable_and_every_variable_defined():
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for expr in _queries(_dashboard()):
        for used in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
            assert used in variables or used in BUILTIN_VARIABLES, f"${used} in {expr}"


def test_queries_are_balanced():
    for expr in _queries(_dashboard()):
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr
        assert expr.count('"') % 2 == 0, expr


def test_covers_what_operators_asked_for():
    """Issue #17 item 7: request count, errors by status, TTFT/latency histograms, tokens/s per model."""
    names = {name for expr in _queries(_dashboard()) for name in _metric_names(expr)}
    assert {"ray_serve_num_http_requests_total", "ray_serve_num_http_error_requests_total",
            "ray_serve_http_request_latency_ms_bucket", "ray_vllm_time_to_first_token_seconds_bucket",
            "ray_vllm_generation_tokens_total", "ray_vllm_lora_requests_info"} <= names
    exprs = " ".join(_queries(_dashboard()))
    assert "by (status_code)" in exprs and "error_code" in exprs and "by (model_name)" in exprs


def test_every_metric_is_defined_by_the_installed_ray_or_vllm():
    names = sorted({name for expr in _queries(_dashboard()) for name in _metric_names(expr)})
    assert len(names) >= 10
    missing = [name for name in names if _definition(name) is None]
    assert not missing, (f"not defined in the installed Ray Serve / Ray LLM / vLLM (renamed?): {missing}; "
                         "grep the Counter/Histogram/Gauge names under site-packages/ray/serve and vllm/v1/metrics")


def test_export_form_matches_rays_own_dashboards():
    """Ray ships Grafana dashboards for the same metrics; where they query one of ours, the exported
    name (prefix and suffix) must be the one they use."""
    theirs_dir = _site_packages() / "ray" / "dashboard" / "modules" / "metrics" / "dashboards"
    if not theirs_dir.is_dir():
        pytest.skip("this Ray has no bundled dashboards")
    theirs = set(re.findall(r"\bray_[a-z0-9_]+", " ".join(p.read_text() for p in theirs_dir.glob("*.py"))))
    ours = {name for expr in _queries(_dashboard()) for name in _metric_names(expr)}

    def base(name: str) -> str:
        return re.sub(r"(_total|_bucket|_sum|_count)$", "", name)

    their_bases = {base(n): n for n in theirs}
    checked = 0
    for name in ours:
        if base(name) in their_bases:
            same_base = {n for n in theirs if base(n) == base(name)}
            assert name in same_base, f"{name}: Ray's dashboards use {sorted(same_base)}"
            checked += 1
    assert checked >= 5


def test_the_check_catches_a_renamed_metric():
    assert _definition("ray_serve_num_http_requests_total") is not None
    assert _definition("ray_serve_num_http_requests_count") is None, "a counter has no _count series"
    assert _definition("ray_serve_num_http_request_total") is None
    assert _definition("ray_vllm_time_to_first_token_seconds_bucket")[0] == "histogram"
    assert _definition("ray_vllm_time_to_first_token_seconds_total") is None
