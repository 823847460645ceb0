"""The sweep's loss curves: one line per trial (validation metric solid, training loss dotted),
stopped trials visibly short, the best trial drawn thicker."""

from __future__ import annotations

import io


def plot_curves(result) -> bytes:
    """PNG bytes of every trial's curves (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    cmap = plt.get_cmap("tab10")
    for index, trial in enumerate(result.trials):
        if not trial.curve:
            continue
        color = cmap(index % 10)
        steps = [p["step"] for p in trial.curve]
        best = trial.trial_id == result.best_trial
        label = f"{trial.trial_id} ({trial.status}{', best' if best else ''})"
        ax.plot(steps, [p[result.metric] for p in trial.curve], color=color, marker="o",
                linewidth=3 if best else 1.5, label=label)
        ax.plot(steps, [p["loss"] for p in trial.curve], color=color, linestyle=":", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{result.metric} (solid), train loss (dotted)")
    ax.set_title(f"sweep {result.name}: {len(result.trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
