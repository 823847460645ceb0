"""Lineage: what a model was made from, from the dataset to the endpoint.

Every model directory rayloom exports carries `rayloom_lineage.json` (vLLM and transformers ignore
the file): a record with a fresh `id`, the run that produced it, the data it trained on (the data
manifest's content / config / tokenizer hashes) and its parent model's record, nested. Evaluation
stores the record of the model it measured, the deploy gate refuses a model whose record differs
from the evaluated one (it was retrained in place), and the serving endpoint publishes the record
in its model card (`GET /v1/models/<id>` -> metadata.rayloom_lineage).

Hand-written because no library in the stack tracks lineage across Ray Data, Ray Train and Ray
Serve; MLflow (optional here) logs runs, not the model -> data chain at serving time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from rayloom import storage
from rayloom.data import read_manifest

log = logging.getLogger(__name__)

LINEAGE_FILE = "rayloom_lineage.json"
FORMAT = "rayloom-lineage/1"
# Nesting bound for parent records: a chain longer than this is cut (its ids still identify it).
MAX_DEPTH = 16


def config_hash(obj: Any) -> str:
    """Stable hash of a (dataclass) config."""
    content = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_record(output: str) -> dict[str, Any]:
    """The part of a data manifest that identifies the shards a model trained on."""
    manifest = read_manifest(output)
    return {
        "uri": str(output),
        "name": manifest.name or None,
        "kind": manifest.kind,
        "content_hash": manifest.content_hash,
        "config_hash": manifest.config_hash,
        "tokenizer_hash": manifest.tokenizer_hash,
        "sources": [s.uri for s in manifest.sources],
        "tokens": manifest.tokens.real if manifest.tokens else None,
    }


def preset_record(model) -> dict[str, Any]:
    """A model built from a preset: identified by its config (rebuilt identically from it)."""
    return {"format": FORMAT, "id": f"preset-{model.preset}-{config_hash(model)}", "stage": "model",
            "model": model.name, "preset": model.preset}


def base_record(model) -> dict[str, Any] | None:
    """The lineage of a run's starting model: a preset's, an exported model's file, or None (foreign model)."""
    if model.preset is not None and not model.path:
        return preset_record(model)
    return read_lineage(model.path) if model.path else None


def new_record(stage: str, *, run: str, parent: dict | None, data: dict | None = None,
               **details: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "id": uuid.uuid4().hex,
        "stage": stage,
        "run": run,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data,
        **details,
        "parent": _trim(parent, MAX_DEPTH),
    }


def _trim(record: dict | None, depth: int) -> dict | None:
    if record is None:
        return None
    if depth <= 0:
        return {"id": record.get("id"), "truncated": True}
    return {**record, "parent": _trim(record.get("parent"), depth - 1)}


def write_lineage(model_dir: str | os.PathLike, record: dict[str, Any]) -> str:
    uri = storage.join(str(model_dir), LINEAGE_FILE)
    storage.write_text(uri, json.dumps(record, indent=2, sort_keys=False, default=str))
    return uri


def read_lineage(model_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    """The record beside a model, or None when the directory has none (or is a hub id)."""
    if not model_dir:
        return None
    try:
        root = str(model_dir)
        if storage.is_s3(root) and storage.is_committed(root):  # a local one reads through its link
            root = storage.resolve_committed(root)
        uri = storage.join(root, LINEAGE_FILE)
        if not storage.exists(uri):
            return None
        return json.loads(storage.read_text(uri))
    except (OSError, ValueError) as exc:  # unreadable lineage must not stop serving or evaluating
        log.warning("could not read the lineage of %s: %s", model_dir, exc)
        return None


def describe(record: dict | None) -> list[str]:
    """One line per generation, newest first: `stage run (details) <- data ...`."""
    lines = []
    while record:
        if record.get("truncated"):
            lines.append(f"... ({record.get('id')})")
            break
        if record.get("stage") == "model":
            lines.append(f"model {record.get('model')} (preset {record.get('preset')})")
        else:
            what = ", ".join(f"{k} {record[k]}" for k in ("objective", "peft", "steps") if record.get(k))
            data = record.get("data") or {}
            from_data = (f" <- data {data.get('name') or data.get('uri')} ({str(data.get('content_hash'))[:12]})"
                         if data.get("content_hash") else (f" <- {data['source']}" if data.get("source") else ""))
            lines.append(f"{record.get('stage')} run {record.get('run')} ({what}){from_data}  id {record.get('id')}")
        record = record.get("parent")
    return lines or ["(no lineage recorded)"]
