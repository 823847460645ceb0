"""ASHA vs a full search on the same budget: compute (trial-steps) to reach the same best validation loss.

Both sweeps run the real `rayloom.tune.sweep` over the same search space with the same seed, so
they sample the same trial configurations: the full search (FIFO, no early stopping) trains every
trial to the end; ASHA stops the trials that lag at its rungs. Compute is counted in trial-steps:
optimizer steps summed over every trial.

A trial's trainer runs asynchronously from Tune (Ray Train workers report through the Train
controller's poll), so a trial that ASHA stops has usually trained past the evaluation that got it
stopped. Those steps are charged: a stopped trial is charged up to its newest checkpoint directory
(complete or not) plus one more evaluation interval, the most it can have trained before the next
checkpoint would have appeared. That is an upper bound; the checkpointed count is shown beside it.

The headline is ASHA's total compute over the full search's total, with both best validation
losses: each search only knows its best once all its trials have ended, so whole searches are
compared, and the ratio only counts when ASHA's best matches the full search's (same trial, or a
val_loss within `TOLERANCE`).
"""


import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

DESCRIPTION = "rayloom tune: ASHA vs full random search, total trial-steps for the same best val_loss"

# Relative val_loss gap under which ASHA's best counts as the full search's best.
TOLERANCE = 0.005


@dataclass
class Settings:
    num_samples: int
    steps_per_eval: int
    num_reports: int
    concurrent: int

    @property
    def max_steps(self) -> int:
        return self.steps_per_eval * self.num_reports


def _settings(quick: bool) -> Settings:
    # ASHA's rungs (grace_period=1, reduction_factor=3) are at 1, 3 and 9 of the 18 evaluations.
    # On 2 cores a trial launch costs ~70-100 s and each evaluation ~2-4 s (Ray Train's report
    # poll), so both sweeps together take ~22 minutes (the full search ~14 of them).
    return Settings(num_samples=4, steps_per_eval=2, num_reports=4, concurrent=2) if quick else \
        Settings(num_samples=12, steps_per_eval=4, num_reports=18, concurrent=2)


def _shards(model_dir: Path, out: str, seq_len: int = 64) -> str:
    """Packed rows (the shard contract) from the offline corpus, committed with a manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from rayloom import storage
    from rayloom.models.tokenizer_kit import offline_corpus

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows, ids, labels, pos = [], [], [], []
    for text in offline_corpus():
        for para in text.split("\n\n"):
            doc = tok(para.strip())["input_ids"][:seq_len]
            if len(doc) < 8:
                continue
            if len(ids) + len(doc) > seq_len:
                pad = seq_len - len(ids)
                rows.append({"input_ids": ids + [tok.pad_token_id] * pad, "labels": labels + [-100] * pad,
                             "position_ids": pos + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad})
                ids, labels, pos = [], [], []
            ids += doc
            labels += [-100] + doc[1:]
            pos += list(range(len(doc)))
        if len(rows) >= 80:
            break
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("position_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8()))])
    with tempfile.TemporaryDirectory() as tmp:
        splits = {}
        for split, part in (("train", rows[:64]), ("validation", rows[64:80])):
            (Path(tmp) / split).mkdir()
            pq.write_table(pa.Table.from_pylist(part, schema=schema), Path(tmp) / split / "part-00000.parquet")
            splits[split] = {"rows": len(part), "files": [f"{split}/part-00000.parquet"]}
        (Path(tmp) / "manifest.json").write_text(json.dumps({"kind": "lm", "seq_len": seq_len, "splits": splits}))
        return storage.commit_dir(tmp, out)


def _overrides(s: Settings, root: str, data: str, name: str, scheduler: str) -> list[str]:
    return ["model=tiny-2l", "data.seq_len=64", f"data.output={data}", "train.num_workers=1",
            "train.micro_batch_size=2", "train.warmup_steps=0", f"train.max_steps={s.max_steps}",
            "train.eval_batches=8", "deepspeed=zero1", f"storage.root={root}", "tracking.progress_bar=false",
            "tune=random", f"tune.name={name}", f"tune.scheduler={scheduler}", f"tune.num_samples={s.num_samples}",
            f"tune.max_concurrent_trials={s.concurrent}", f"tune.num_reports={s.num_reports}", "tune.seed=7",
            "tune.grace_period=1", "tune.reduction_factor=3", "~tune.space.train.warmup_steps",
            "tune.space.train.lr.low=1e-5", "tune.space.train.lr.high=2e-2"]


def charged_steps(trial, s: Settings) -> int:
    """Upper bound of the optimizer steps a trial ran: a stopped trial may have trained up to one
    evaluation interval past its newest checkpoint directory before Tune's stop reached its workers."""
    if trial.status == "stopped early":
        return min(s.max_steps, trial.steps_trained + s.steps_per_eval)
    return trial.steps_trained


def run(quick: bool = False):
    from harness import Result

    from rayloom.config import ClusterConfig, compose
    from rayloom.models import resolve_model_dir
    from rayloom.runtime import init_ray
    from rayloom.tune import sweep

    s = _settings(quick)
    model_dir = resolve_model_dir(compose("train", ["model=tiny-2l"]).model)
    root = tempfile.mkdtemp(prefix="bench-tune-")
    data = _shards(model_dir, f"{root}/data")
    init_ray(ClusterConfig(num_cpus=4))
    full = sweep(compose("tune", _overrides(s, root, data, "full", "fifo")))
    asha = sweep(compose("tune", _overrides(s, root, data, "asha", "asha")))

    def charged(res) -> int:
        return sum(charged_steps(t, s) for t in res.trials)

    def row(name, res) -> dict:
        return {"system": name, "trials": len(res.trials),
                "stopped early": sum(t.status == "stopped early" for t in res.trials),
                "evaluations": sum(t.num_reports for t in res.trials),
                "trial-steps (checkpointed)": res.total_steps, "trial-steps (charged)": charged(res),
                "best val_loss": res.best_metric, "best lr": res.best_values.get("train.lr")}

    same_configs = sorted(t.values["train.lr"] for t in full.trials) == sorted(t.values["train.lr"] for t in asha.trials)
    same_trial = full.best_values == asha.best_values
    gap = asha.best_metric / full.best_metric - 1.0
    matched = same_trial or gap <= TOLERANCE
    result = Result(name="tune", description=DESCRIPTION,
                    rows=[row("full random search (fifo, no early stopping)", full), row("rayloom tune ASHA", asha)])
    key = "ASHA / full search (total trial-steps, charged, same best val_loss)"
    result.ratios[key] = charged(asha) / max(charged(full), 1)
    result.goals[key] = "<= 0.5"
    result.ratios["ASHA / full search (total trial-steps, checkpointed only)"] = \
        asha.total_steps / max(full.total_steps, 1)
    result.ratios["ASHA best val_loss / full best val_loss"] = asha.best_metric / full.best_metric
    result.notes += [
        f"{s.num_samples} trials of tiny-2l, {s.max_steps} steps each with an evaluation (and checkpoint) every "
        f"{s.steps_per_eval} ({s.num_reports} evaluations), lr log-uniform in [1e-5, 2e-2], cosine schedule, "
        f"tune.seed=7, {s.concurrent} trials at a time, 1 Ray Train worker (DeepSpeed ZeRO-1, CPU) per trial; "
        "ASHA max_t = num_reports, grace_period=1, reduction_factor=3 (rungs at 1, 3, 9 evaluations).",
        f"Both sweeps sampled the same learning rates: {same_configs}.",
        f"ASHA's best is the full search's best: {matched} ("
        + ("the same trial configuration" if same_trial else
           f"a different trial, val_loss {100 * gap:+.2f}% against a tolerance of {100 * TOLERANCE:.1f}%") + ").",
        "Charged trial-steps: a trial ASHA stopped is charged up to its newest checkpoint directory plus one "
        "evaluation interval (an upper bound of what its workers trained before the stop reached them; Ray Train "
        "workers run ahead of Tune's decision). Checkpointed trial-steps count only up to the newest checkpoint.",
        "Per trial (lr: full search best val_loss / ASHA status, evaluations, charged steps): " + "; ".join(
            f"{f.values['train.lr']:.2e}: {f.best_metric:.3f} / {a.status}, {a.num_reports}, {charged_steps(a, s)}"
            for f, a in _paired(full, asha)) + ".",
        f"Sweep directories (trial tables, loss curves): {root}/tune/full and {root}/tune/asha.",
    ]
    if not matched:
        result.notes.append("ASHA did NOT reach the full search's best val_loss: the compute ratio compares "
                            "searches of different quality.")
    return result


def _paired(full, asha):
    by_lr = {round(t.values["train.lr"], 12): t for t in asha.trials}
    for trial in sorted(full.trials, key=lambda t: t.values["train.lr"]):
        match = by_lr.get(round(trial.values["train.lr"], 12))
        if match is not None:
            yield trial, match
