"""Canary releases: a candidate model beside the served one, a fraction of the traffic, a report.

With serve.canary_model_path set, the app runs a second engine deployment for the candidate, served
as "<model id>-canary" (rayloom.serve.app). The ingress sends serve.canary_fraction of the requests
for "<model id>" to it - every request counted (serve.canary_by=request: exactly that fraction,
spread evenly) or by API key (serve.canary_by=api_key: a key always lands on the same version) -
and answers name the version that served them in `model`. Asking for "<model id>-canary" by name
reaches the candidate directly.

The report compares both versions from the ingress's own Prometheus series
(rayloom.serve.metrics, tagged by model), read from every node's Ray metrics port: requests,
server errors, and latency quantiles estimated from the histogram buckets. `rayloom serve status`
prints it and `rayloom serve promote` prints it before it rolls the candidate out.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

CANARY_SUFFIX = "-canary"
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def canary_id(model_id: str) -> str:
    return f"{model_id}{CANARY_SUFFIX}"


def by_request(count: int, fraction: float) -> bool:
    """Whether the count-th request (1-based) goes to the canary: exactly `fraction` of every run of
    requests, spread evenly (floor(n*f) steps up once per canary request)."""
    return math.floor(count * fraction) > math.floor((count - 1) * fraction)


def by_key(api_key: str, fraction: float) -> bool:
    """Whether this API key's requests go to the canary: a stable hash of the key, so a client
    keeps seeing one version."""
    bucket = int.from_bytes(hashlib.sha256(api_key.encode()).digest()[:8], "big") / 2**64
    return bucket < fraction


@dataclass
class VersionStats:
    model: str
    requests: float = 0.0
    server_errors: float = 0.0
    client_errors: float = 0.0
    # Cumulative latency histogram: upper bound (s) -> count at or below it.
    buckets: dict[float, float] | None = None

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (Prometheus' histogram_quantile
        without interpolation): an upper estimate."""
        if not self.buckets:
            return None
        total = self.buckets.get(math.inf, max(self.buckets.values()))
        if not total:
            return None
        for bound in sorted(self.buckets):
            if self.buckets[bound] >= q * total:
                return bound
        return math.inf


def parse_stats(texts: list[str], models: tuple[str, ...]) -> dict[str, VersionStats]:
    """Both versions' numbers from Ray's Prometheus exports (one text per node), summed."""
    stats = {m: VersionStats(m, buckets={}) for m in models}
    for text in texts:
        for line in text.splitlines():
            found = _SAMPLE.match(line)
            if not found:
                continue
            name, value = found["name"], float(found["value"])
            labels = dict(_LABEL.findall(found["labels"]))
            row = stats.get(labels.get("model", ""))
            if row is None or labels.get("adapter"):
                continue
            if name == "ray_rayloom_serve_requests_total":
                row.requests += value
                status = int(labels.get("status", "0") or 0)
                if status >= 500:
                    row.server_errors += value
                elif status >= 400:
                    row.client_errors += value
            elif name == "ray_rayloom_serve_request_latency_s_bucket":
                bound = math.inf if labels.get("le") in ("+Inf", "inf") else float(labels["le"])
                row.buckets[bound] = row.buckets.get(bound, 0.0) + value
    return stats


def read_stats(model_id: str) -> dict[str, VersionStats]:
    """The report's numbers from every alive node of the connected Ray cluster."""
    import httpx
    import ray

    texts = []
    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            try:
                texts.append(httpx.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics",
                                       timeout=10).text)
            except httpx.HTTPError:
                continue  # a node without a metrics agent: its share is missing, the rest is reported
    return parse_stats(texts, (model_id, canary_id(model_id)))


def format_report(stats: dict[str, VersionStats]) -> str:
    lines = ["canary report (ingress metrics, every node):",
             f"  {'version':<28} {'requests':>9} {'5xx rate':>9} {'4xx':>6} {'p50 s':>7} {'p99 s':>7}"]
    for row in stats.values():
        p50, p99 = row.quantile(0.5), row.quantile(0.99)
        lines.append(f"  {row.model:<28} {row.requests:>9.0f} {100 * row.error_rate:>8.1f}% {row.client_errors:>6.0f} "
                     f"{_seconds(p50):>7} {_seconds(p99):>7}")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "> 120" if math.isinf(value) else f"<= {value:g}"
