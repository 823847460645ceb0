"""Deterministic per-record decisions: record ids, source sampling, train/validation split, order.

Every decision is a pure function of (record id, seed), computed with a vectorised splitmix64
hash, so the driver (for counts) and Ray Data workers (for the data) agree without shipping
per-record tables around, and a rerun gives the same shards whatever the cluster size or block
layout.
"""

from __future__ import annotations

import numpy as np

# Record id: which source, which file of it, which row of that file, packed in one int64.
_SOURCE_BITS, _FILE_BITS, _ROW_BITS = 7, 21, 35
MAX_FILES_PER_SOURCE = 1 << _FILE_BITS
MAX_ROWS_PER_FILE = 1 << _ROW_BITS

# Salts keep the decisions independent of each other.
_SALT_SAMPLE, _SALT_SPLIT, _SALT_ORDER = 0x51, 0x5B, 0x0D


def record_id(source_idx: int, file_idx: int, row_idx: int) -> int:
    """One int64 for (source, file, position); a ValueError instead of a silent collision."""
    if not (0 <= source_idx < (1 << _SOURCE_BITS) and 0 <= file_idx < MAX_FILES_PER_SOURCE
            and 0 <= row_idx < MAX_ROWS_PER_FILE):
        raise ValueError(f"record position out of range: source {source_idx} (< {1 << _SOURCE_BITS}), file "
                         f"{file_idx} (< {MAX_FILES_PER_SOURCE}), position {row_idx} (< {MAX_ROWS_PER_FILE})")
    return (source_idx << (_FILE_BITS + _ROW_BITS)) | (file_idx << _ROW_BITS) | row_idx


def source_of(ids: np.ndarray) -> np.ndarray:
    return (np.asarray(ids, dtype=np.int64) >> (_FILE_BITS + _ROW_BITS)).astype(np.int64)


def locate(record: int) -> tuple[int, int, int]:
    """(source, file, row) of a record id."""
    return (record >> (_FILE_BITS + _ROW_BITS), (record >> _ROW_BITS) & (MAX_FILES_PER_SOURCE - 1),
            record & (MAX_ROWS_PER_FILE - 1))


def mix(values: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """splitmix64 of (value, seed, salt): uniform uint64 per input."""
    with np.errstate(over="ignore"):
        z = np.asarray(values, dtype=np.int64).astype(np.uint64)
        z = z + np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_interval(values: np.ndarray, seed: int, salt: int) -> np.ndarray:
    return (mix(values, seed, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def num_copies(ids: np.ndarray, weights: np.ndarray, seed: int) -> np.ndarray:
    """Copies of each record in the mix: floor(weight), plus one more with probability frac(weight)."""
    weights = np.asarray(weights, dtype=np.float64)
    whole = np.floor(weights)
    extra = unit_interval(ids, seed, _SALT_SAMPLE) < (weights - whole)
    return (whole + extra).astype(np.int64)


def is_validation(ids: np.ndarray, val_fraction: float, seed: int, forced: np.ndarray | None = None) -> np.ndarray:
    """Split per record (all copies and chunks of a record land on the same side)."""
    val = unit_interval(ids, seed, _SALT_SPLIT) < val_fraction
    if forced is not None and len(forced):
        val |= np.isin(ids, forced)
    return val


def split_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """The value is_validation thresholds, for picking a validation record when none fell there."""
    return unit_interval(ids, seed, _SALT_SPLIT)


def order_key(ids: np.ndarray, copies: np.ndarray, seed: int) -> np.ndarray:
    """A shuffled but reproducible order for record copies (sources end up interleaved)."""
    ids = np.asarray(ids, dtype=np.int64)
    return mix(mix(ids, seed, _SALT_ORDER).astype(np.int64) ^ np.asarray(copies, dtype=np.int64), seed, _SALT_ORDER)

