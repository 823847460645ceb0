"""The job's final summary table: records in/out per stage, drops, tokens, bad rows, time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rayloom.data.schema import Manifest


@dataclass
class StageRow:
    stage: str
    records_in: int | None = None
    records_out: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class JobSummary:
    stages: list[StageRow] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRow]:
        row = StageRow(name)
        start = time.perf_counter()
        try:
            yield row
        finally:
            row.seconds = time.perf_counter() - start
            self.stages.append(row)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def table(self) -> str:
        header = ("stage", "records in", "records out", "dropped", "time")
        body = []
        for s in self.stages:
            dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(s.dropped.items()) if v) or "-"
            body.append((s.stage, _num(s.records_in), _num(s.records_out), dropped, f"{s.seconds:.1f}s"))
        body.append(("total", "", "", "", f"{self.seconds:.1f}s"))
        widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
        fmt = lambda r: "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        rule = "  ".join("-" * w for w in widths)
        return "\n".join([fmt(header), rule, *(fmt(r) for r in body), *self.lines])


def _num(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def manifest_lines(manifest: Manifest) -> list[str]:
    """The lines under the table: tokens and shards, bad rows, the hashes later stages record."""
    lines = []
    counts = manifest.counts
    if manifest.materialized:
        tokens = manifest.tokens
        train, val = manifest.splits["train"], manifest.splits["validation"]
        how = "packing efficiency" if manifest.kind == "lm" and manifest.packing else \
            "of the padded slots are real tokens"
        lines.append(f"tokens: {tokens.real:,} real in {tokens.slots:,} slots "
                     f"({tokens.packing_efficiency:.1%} {how}); "
                     f"train {train.rows:,} rows in {len(train.files)} shard(s), "
                     f"validation {val.rows:,} rows in {len(val.files)} shard(s)")
    else:
        lines.append("materialize=false: records validated and deduplicated; tokenization and packing stream "
                     "from the sources while training reads (rayloom.data.open_shards)")
    if counts.bad:
        lines.append(f"bad rows: {counts.bad:,} of {counts.read:,} quarantined in {manifest.quarantine}")
    lines.append(f"content hash {manifest.content_hash[:16]}  config hash {manifest.config_hash[:16]}  "
                 f"tokenizer {manifest.tokenizer_hash[:16]}")
    return lines
