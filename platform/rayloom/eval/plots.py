"""Report figures with matplotlib's Agg backend (no display): metric bars, before/after, calibration,
robustness and bias breakdowns. Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# Metrics drawn as bars on a 0..1 axis (rates and accuracies).
UNIT_METRICS = ("exact_match", "contains", "acc", "acc_norm", "rouge1", "rouge2", "rougeL", "refusal_rate",
                "over_refusal_rate", "safety_accuracy", "outcome_disagreement")


def metric_bars(metrics: dict[str, float], path: Path, title: str = "Metrics") -> Path | None:
    items = [(k, v) for k, v in sorted(metrics.items()) if k.rsplit("/", 1)[-1] in UNIT_METRICS and v == v]
    if not items:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4C72B0")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title(title)
    for i, (_, v) in enumerate(items):
        ax.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def before_after(rows: list[dict], path: Path, labels: tuple[str, str]) -> Path | None:
    rows = [r for r in rows if r["metric"].rsplit("/", 1)[-1] in UNIT_METRICS
            and r["before"] is not None and r["after"] is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["before"] for r in rows], height=0.4, label=labels[0], color="#B0B0B0")
    ax.barh([y + 0.2 for y in ys], [r["after"] for r in rows], height=0.4, label=labels[1], color="#55A868")
    ax.set_yticks(list(ys), [r["metric"] for r in rows])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.set_title(f"{labels[0]} -> {labels[1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibration(task: str, bins: list[dict], path: Path) -> Path | None:
    used = [b for b in bins if b["count"]]
    if not used:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.bar([(b["low"] + b["high"]) / 2 for b in used], [b["accuracy"] for b in used],
           width=[b["high"] - b["low"] for b in used], alpha=0.7, edgecolor="black", label="accuracy")
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o", color="#C44E52",
            label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Calibration: {task}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def breakdown(task: str, values: dict[str, float], path: Path, xlabel: str) -> Path | None:
    items = [(k, v) for k, v in values.items() if v == v]
    if not items:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#8172B2")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(task)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
