"""Canary routing and its report (rayloom.serve.canary), and the config that asks for one."""

from __future__ import annotations

import math

import pytest

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.serve import canary


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.3])
def test_by_request_sends_exactly_the_fraction_spread_evenly(fraction):
    picks = [canary.by_request(n, fraction) for n in range(1, 101)]
    assert sum(picks) == math.floor(100 * fraction)
    chosen = [i for i, p in enumerate(picks) if p]
    assert max(b - a for a, b in zip(chosen, chosen[1:], strict=False)) <= math.ceil(1 / fraction)


def test_by_key_is_stable_per_key_and_near_the_fraction():
    keys = [f"key-{n}" for n in range(2000)]
    picked = [canary.by_key(k, 0.2) for k in keys]
    assert picked == [canary.by_key(k, 0.2) for k in keys]  # a key keeps its version
    assert 0.17 < sum(picked) / len(keys) < 0.23


TEXT = """# HELP ray_rayloom_serve_requests_total chat/completions requests
ray_rayloom_serve_requests_total{Component="core_worker",adapter="",model="tiny",route="chat",status="200"} 8.0
ray_rayloom_serve_requests_total{adapter="",model="tiny",route="completions",status="500"} 2.0
ray_rayloom_serve_requests_total{adapter="",model="tiny-canary",route="chat",status="200"} 3.0
ray_rayloom_serve_requests_total{adapter="",model="tiny-canary",route="chat",status="400"} 1.0
ray_rayloom_serve_requests_total{adapter="sql",model="tiny",route="chat",status="200"} 50.0
ray_rayloom_serve_request_latency_s_bucket{adapter="",le="0.1",model="tiny"} 5.0
ray_rayloom_serve_request_latency_s_bucket{adapter="",le="0.5",model="tiny"} 9.0
ray_rayloom_serve_request_latency_s_bucket{adapter="",le="+Inf",model="tiny"} 10.0
ray_rayloom_serve_request_latency_s_bucket{adapter="",le="0.1",model="tiny-canary"} 0.0
ray_rayloom_serve_request_latency_s_bucket{adapter="",le="0.5",model="tiny-canary"} 4.0
ray_rayloom_serve_request_latency_s_bucket{adapter="",le="+Inf",model="tiny-canary"} 4.0
"""


def test_report_sums_nodes_splits_errors_and_estimates_latency():
    stats = canary.parse_stats([TEXT, TEXT], ("tiny", "tiny-canary"))
    stable, candidate = stats["tiny"], stats["tiny-canary"]
    assert (stable.requests, stable.server_errors, stable.client_errors) == (20, 4, 0)  # two nodes, no adapter rows
    assert stable.error_rate == pytest.approx(0.2) and candidate.error_rate == 0.0 and candidate.client_errors == 2
    assert stable.quantile(0.5) == 0.1 and stable.quantile(0.99) == math.inf and candidate.quantile(0.99) == 0.5
    report = canary.format_report(stats)
    assert "tiny-canary" in report and "20.0%" in report and "<= 0.5" in report


def test_a_canary_needs_the_split_layout_and_a_fraction_in_range():
    with pytest.raises(UserError, match="serve.colocate_ingress=false"):
        compose("serve", ["serve.canary_model_path=/models/b"])
    with pytest.raises(UserError, match="serve.canary_fraction"):
        compose("serve", ["serve.canary_model_path=/models/b", "serve.colocate_ingress=false",
                          "serve.canary_fraction=0"])
    cfg = compose("serve", ["serve.canary_model_path=/models/b", "serve.colocate_ingress=false",
                            "serve.canary_by=api_key"])
    assert cfg.serve.canary_fraction == 0.1 and canary.canary_id("tiny") == "tiny-canary"
