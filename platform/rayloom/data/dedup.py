"""Exact and near-duplicate detection across the whole dataset: the record-level pieces.

Exact keys and MinHash signatures (datasketch) are computed in the read tasks; `band_keys` are the
LSH band keys, `candidate_groups` finds records that share a key (run per hash partition, see
dedup_ray.py) and `resolve_groups` applies the first-occurrence rule to the candidates.
"""

from __future__ import annotations

import hashlib

import numpy as np

from rayloom.config.data import DedupConfig
from rayloom.data.cleaning import text_words

DEDUP_REASONS = ("duplicate_exact", "duplicate_near")

# datasketch's MinHash seed; any fixed value, the same on every worker.
_MINHASH_SEED = 1


def exact_key(text: str) -> bytes:
    """Hash of the case- and whitespace-normalised text: catches copies that differ only in spacing."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=16).digest()


def shingles(text: str, size: int, words: list[str] | None = None) -> list[bytes]:
    """The distinct `size`-word shingles of `text` (`words`: its lower-cased \\w+ words, if known)."""
    words = text_words(text) if words is None else words   # the quality filters' words
    if len(words) <= size:
        return [" ".join(words).encode("utf-8")]
    return sorted({" ".join(words[i:i + size]).encode("utf-8") for i in range(len(words) - size + 1)})


def minhash_signatures(texts: list[str], dedup: DedupConfig, words: list[list[str]] | None = None) -> list[bytes]:
    """One MinHash signature per text (num_perm uint32 values as bytes). `words`: each text's
    cleaning.text_words, when the read task already has them for the quality filters."""
    from datasketch import MinHash

    words = words or [None] * len(texts)
    hashes = MinHash.bulk([shingles(t, dedup.shingle_size, w) for t, w in zip(texts, words, strict=True)],
                          num_perm=dedup.num_perm, seed=_MINHASH_SEED)
    return [m.hashvalues.astype(np.uint32).tobytes() for m in hashes]


def lsh_bands(dedup: DedupConfig) -> tuple[int, int]:
    """(bands, rows per band) of datasketch's MinHashLSH for this config (weights tuned for recall:
    every candidate is confirmed with the signatures' Jaccard estimate, so an extra candidate costs a
    comparison, while a missed band match is a kept duplicate)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=dedup.threshold, num_perm=dedup.num_perm, weights=(0.05, 0.95))
    return lsh.b, lsh.r


def _mix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: a 64-bit hash of (band index, the band's rows of the signature).

    Two records share a key when they share a band, as in datasketch's LSH; a 64-bit collision could
    add a candidate (then confirmed by Jaccard), with odds of about bands * 2**-64 per pair."""
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(len(signatures), np.uint64(band * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))
            for col in range(band * rows, (band + 1) * rows):
                h = _mix64(h ^ signatures[:, col].astype(np.uint64))
            keys[:, band] = h
    return keys


def exact_key64(exact: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(e[:8] for e in exact), dtype=np.uint64).copy()


def candidate_groups(keys: np.ndarray, ids: np.ndarray) -> list[np.ndarray]:
    """Groups (sorted doc ids) of 2+ records sharing a key; `keys`/`ids` are parallel 1-D arrays."""
    if not len(keys):
        return []
    order = np.lexsort((ids, keys))
    keys, ids = keys[order], ids[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    return [np.unique(ids[a:b]) for a, b in zip(starts, ends, strict=True) if b - a > 1]


def resolve_groups(groups: list[np.ndarray], exact: dict[int, bytes], signatures: dict[int, np.ndarray],
                   dedup: DedupConfig) -> dict[int, str]:
    """{doc id: reason} of every duplicate among the candidate groups: the first-occurrence rule.

    In doc-id order (source, file, position), a record is a duplicate when an earlier *kept* record
    has the same exact key (`duplicate_exact`) or shares an LSH band with it and has an estimated
    Jaccard >= threshold (`duplicate_near`). This is the same decision as one ordered pass with a
    hash set and an LSH index over the whole dataset, since a record's decision only depends on
    earlier records it shares a key with (tested against that pass, tests/unit/test_data_dedup.py).
    The distributed job runs the two halves apart: `group_links` in one task per hash partition,
    `first_occurrence` once over the links.
    """
    followers, edges = group_links(groups, exact, signatures, dedup)
    return first_occurrence(followers, edges)


def group_links(groups: list[np.ndarray], exact: dict[int, bytes], signatures: dict[int, np.ndarray],
                dedup: DedupConfig) -> tuple[dict[int, int], dict[int, set[int]]]:
    """What the candidate groups say, group by group: exact copy -> the first record of its exact
    class, and later record -> the earlier records with Jaccard >= threshold (exact copies left out).

    Copies of one text share every band key, so an exact class is whole in each group that holds
    it: the links of groups computed apart (one hash partition each) merge without conflict."""
    followers: dict[int, int] = {}   # exact copy -> the first record of its exact class
    edges: dict[int, set[int]] = {}  # later rep -> earlier reps with Jaccard >= threshold
    for group in groups:
        reps: list[int] = []
        first: dict[bytes, int] = {}
        for doc in group.tolist():
            if dedup.exact:
                rep = first.setdefault(exact[doc], doc)
                if rep != doc:
                    followers[doc] = rep
                    continue
            reps.append(doc)
        if not dedup.near or len(reps) < 2:
            continue
        sig = np.stack([signatures[d] for d in reps])
        for j in range(1, len(reps)):
            similar = np.flatnonzero((sig[:j] == sig[j]).mean(axis=1) >= dedup.threshold)
            if len(similar):
                edges.setdefault(reps[j], set()).update(reps[i] for i in similar.tolist())
    return followers, edges


def first_occurrence(followers: dict[int, int], edges: dict[int, set[int]]) -> dict[int, str]:
    """The ordered pass over the links alone: a record is dropped when one of its earlier similar
    records was kept; an exact copy goes with the first record of its class."""
    dropped: dict[int, str] = {}
    for later in sorted(edges):
        if any(earlier not in dropped for earlier in edges[later]):
            dropped[later] = "duplicate_near"
    for copy, rep in followers.items():
        dropped[copy] = "duplicate_near" if rep in dropped else "duplicate_exact"
    return dropped
