"""The data a run trains on: committed shards (or ready Ray datasets), cut to the objective's columns."""

from __future__ import annotations

from rayloom.config import RayloomConfig
from rayloom.data import open_shards, read_manifest
from rayloom.errors import UserError


def open_training_data(cfg: RayloomConfig, datasets: dict | None, data_output: str,
                       columns: tuple[str, ...], kind: str = "lm") -> tuple[dict, int, int]:
    """({split: Dataset} with only the objective's columns, seq_len, train rows).

    `datasets` ({split: ray.data.Dataset}) wins over the shards at `data_output`; `kind` is the
    shard kind the objective trains on ("lm" or "preference", rayloom.data.schema)."""
    if datasets is None:
        manifest = read_manifest(data_output)
        if manifest.kind != kind:
            what = "preference shards (chosen/rejected pairs)" if kind == "preference" else "language-model shards"
            raise UserError(f"objective.name={cfg.objective.name!r} trains on {what} (kind {kind!r}); the "
                            f"shards at {data_output!r} are of kind {manifest.kind!r}")
        datasets = open_shards(data_output)
        seq_len = manifest.seq_len
        rows = manifest.splits["train"].rows or datasets["train"].count()
    else:
        if "train" not in datasets:
            raise UserError("datasets= needs a 'train' split")
        seq_len = cfg.data.seq_len
        rows = datasets["train"].count()
    missing = [c for c in columns if c not in datasets["train"].columns()]
    if missing:
        raise UserError(f"the train data lacks column(s) {', '.join(missing)} that objective "
                        f"{cfg.objective.name!r} needs (see rayloom.data.schema)")
    selected = {}
    for split, ds in datasets.items():
        if split not in ("train", "validation"):
            continue
        ds = ds.select_columns(list(columns))
        # Workers stream these; rayloom's own progress bar replaces Ray Data's per-worker bars.
        ds.context.enable_progress_bars = False
        ds.context.enable_operator_progress_bars = False
        ds.context.print_on_execution_start = False
        selected[split] = ds
    if seq_len > cfg.model.max_position_embeddings and cfg.model.preset is not None:
        raise UserError(f"the data's seq_len={seq_len} exceeds model.max_position_embeddings="
                        f"{cfg.model.max_position_embeddings}")
    return selected, seq_len, rows
