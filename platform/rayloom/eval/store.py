"""Where eval runs live, how they are written and read, and the per-model index the deploy gate reads.

Layout under `<storage.root>/eval/` (local or s3://):
  runs/<run>/metrics.json          the run's numbers (every report is rebuilt from it)
  runs/<run>/lm_eval/results.json   lm-eval's own output (results, configs, n-shot, versions, ...)
  runs/<run>/lm_eval/samples_<task>.jsonl   lm-eval's per-sample records (prompt, response, metrics)
  runs/<run>/predictions/<task>.jsonl, report.md, report.html, plots/*.png, review/ (human review)
  models/<hash of the model path>.json   {"model": ..., "run": ...}: the model's latest evaluation
A run directory is published with storage.commit_dir, so a reader never sees half a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rayloom import storage
from rayloom.config import StorageConfig
from rayloom.errors import UserError

METRICS_FILE = "metrics.json"
FORMAT = "rayloom-eval/1"


def eval_root(storage_cfg: StorageConfig) -> str:
    return storage.join(storage_cfg.root, "eval")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_run_name(label: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in label) or "model"
    return f"{safe}-{stamp}-{secrets.token_hex(2)}"


def model_key(path: str | os.PathLike) -> str:
    """The identity of a model for the gate index: an absolute local path, or the URI / hub id as given."""
    text = str(path)
    if storage.is_s3(text):
        return text.rstrip("/")
    local = Path(text).expanduser()
    if local.exists() or text.startswith((".", "/", "~")):
        return str(local.resolve())
    return text


def _index_uri(root: str, key: str) -> str:
    return storage.join(root, "models", hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")


def record_latest(root: str, key: str, run_uri: str) -> None:
    storage.write_text(_index_uri(root, key), json.dumps({"model": key, "run": run_uri, "recorded": now_iso()},
                                                          indent=2))


def latest_run_for(root: str, path: str | os.PathLike) -> str | None:
    uri = _index_uri(root, model_key(path))
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_text(uri))["run"]


def is_run(uri: str | os.PathLike) -> bool:
    """A committed eval run: a folder with metrics.json that is not committed is half a run."""
    info = storage.read_commit(uri)  # one marker read
    return info is not None and storage.exists(storage.join(info.path, METRICS_FILE))


def _version(uri: str | os.PathLike) -> str:
    """The committed version to read every file of one run from (a UserError when uncommitted)."""
    return storage.resolve_committed(uri, "eval run")


def load_run(uri: str | os.PathLike) -> dict:
    path = storage.join(_version(uri), METRICS_FILE)
    if not storage.exists(path):
        raise UserError(f"{uri} is not an eval run (no {METRICS_FILE} there)")
    payload = json.loads(storage.read_text(path))
    if payload.get("format") != FORMAT:
        raise UserError(f"{path}: unknown eval format {payload.get('format')!r} (expected {FORMAT})")
    payload["uri"] = str(uri)
    return payload


def load_predictions(uri: str, task: str) -> list[dict]:
    path = storage.join(_version(uri), "predictions", f"{_safe(task)}.jsonl")
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def _safe(name: str) -> str:
    return name.replace("/", "_").replace(":", "_")


def write_run(uri: str, payload: dict, predictions: dict[str, list[dict]],
              extra: Callable[[Path], None] | None = None) -> str:
    """Build the run in a local folder (metrics.json, predictions, whatever `extra` adds) and commit it."""
    with tempfile.TemporaryDirectory(prefix="rayloom-eval-") as tmp:
        local = Path(tmp)
        (local / METRICS_FILE).write_text(json.dumps(payload, indent=2, default=_json_default))
        (local / "predictions").mkdir()
        for task, records in predictions.items():
            with open(local / "predictions" / f"{_safe(task)}.jsonl", "w") as handle:
                for record in records:
                    handle.write(json.dumps(record, default=_json_default) + "\n")
        if extra is not None:
            extra(local)
        return storage.commit_dir(local, uri)


def write_harness_output(local: Path, results: dict, samples: dict[str, list[dict]]) -> None:
    """lm-eval's results and samples as its own CLI writes them (--output_path --log_samples)."""
    folder = local / "lm_eval"
    folder.mkdir(exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=_lenient))
    for task, records in samples.items():
        with open(folder / f"samples_{_safe(task)}.jsonl", "w") as handle:
            for record in records:
                handle.write(json.dumps(record, default=_lenient) + "\n")


def load_harness_results(uri: str) -> dict:
    path = storage.join(_version(uri), "lm_eval", "results.json")
    if not storage.exists(path):
        raise UserError(f"{uri} has no lm-eval results (lm_eval/results.json)")
    return json.loads(storage.read_text(path))


def _numpy_value(value):
    """A numpy scalar or array (lm-eval's samples hold both) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value.item()


def _lenient(value):
    # lm-eval's output holds numpy numbers and arrays, callables (task functions) and other objects.
    if hasattr(value, "tolist") or hasattr(value, "item"):
        return _numpy_value(value)
    return str(value)


def _json_default(value):
    if hasattr(value, "tolist") or hasattr(value, "item"):
        return _numpy_value(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
