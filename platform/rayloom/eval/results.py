"""A task's outcome: its metrics (with standard errors), per-example predictions and plot data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskResult:
    task: str
    kind: str
    num_examples: int
    metrics: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)
    num_errors: int = 0
    # One record per example (prompt, response, reference, per-example scores): predictions/<task>.jsonl.
    predictions: list[dict] = field(default_factory=list)
    # Data for plots and tables: calibration bins, per-category bias gaps, robustness breakdown.
    details: dict = field(default_factory=dict)
    description: str = ""

    def summary(self) -> dict:
        return {"kind": self.kind, "description": self.description, "num_examples": self.num_examples,
                "num_errors": self.num_errors, "metrics": self.metrics, "stderr": self.stderr,
                "details": self.details}
