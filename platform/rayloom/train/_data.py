"""The data a run trains on: committed shards (or ready Ray datasets), cut to the objective's columns."""

from __future__ import annotations

from pathlib import Path

from rayloom import storage
from rayloom.config import ModelConfig, RayloomConfig
from rayloom.data import open_shards, read_manifest
from rayloom.data.schema import Manifest
from rayloom.errors import UserError


def open_training_data(cfg: RayloomConfig, datasets: dict | None, data_output: str,
                       columns: tuple[str, ...], kind: str = "lm") -> tuple[dict, int, int]:
    """({split: Dataset} with only the objective's columns, seq_len, train rows).

    `datasets` ({split: ray.data.Dataset}) wins over the shards at `data_output`; `kind` is the
    shard kind the objective trains on ("lm" or "preference", rayloom.data.schema)."""
    if datasets is None:
        manifest = read_manifest(data_output)
        check_data_tokenizer(cfg.model, manifest, data_output)
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


def check_data_tokenizer(model: ModelConfig, manifest: Manifest, data_output: str) -> None:
    """Refuse shards that another tokenizer made: their token ids index another vocabulary, so the
    workers would fail in their first forward pass (an id past the embedding) or train on the wrong
    tokens. The manifest records the data job's tokenizer hash (rayloom.data.tokenization: equal
    hashes tokenize identically; an export keeps its base's tokenizer files, so it hashes the same).

    Checked where the model's files are at hand without a download: a preset (built from config
    and cached) or a local directory. A model on S3 or the Hub is fetched by the workers, not here;
    shards without a recorded hash (written by other tools) are not checked."""
    if not manifest.tokenizer_hash or not _model_is_local(model):
        return
    from rayloom.data.tokenization import tokenizer_hash
    from rayloom.models import resolve_model_dir

    ours = tokenizer_hash(resolve_model_dir(model))
    if ours != manifest.tokenizer_hash:
        named = f"model={model.preset}" if model.preset is not None else f"model.path={model.path!r}"
        raise UserError(f"the shards at {data_output!r} were tokenized by another tokenizer (hash "
                        f"{manifest.tokenizer_hash[:16]}) than {named}'s (hash {ours[:16]}): their token ids "
                        "index another vocabulary. Run `rayloom data` with the same model settings as "
                        "training, or train the model the shards were made for")


def _model_is_local(model: ModelConfig) -> bool:
    if model.preset is not None:
        return True
    return bool(model.path) and not storage.is_s3(model.path) and Path(model.path).expanduser().is_dir()
