"""Exact and near-duplicate detection across the whole dataset (datasketch MinHash + LSH).

Signatures are computed in parallel inside Ray Data tasks (`content_keys`); the decision which
record is a duplicate needs one global view, so `DuplicateFinder` runs on the driver over the
small key columns, in the dataset's deterministic order: the first occurrence is kept. Its LSH
index holds a few integers per record (datasketch can move it to Redis for billions of records).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from rayloom.config.data import DedupConfig

DEDUP_REASONS = ("duplicate_exact", "duplicate_near")

_WORD = re.compile(r"\w+", re.UNICODE)
# datasketch's MinHash seed; any fixed value, the same on every worker.
_MINHASH_SEED = 1


def exact_key(text: str) -> bytes:
    """Hash of the case- and whitespace-normalised text: catches copies that differ only in spacing."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=16).digest()


def shingles(text: str, size: int) -> list[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return [" ".join(words).encode("utf-8")]
    return sorted({" ".join(words[i:i + size]).encode("utf-8") for i in range(len(words) - size + 1)})


def minhash_signatures(texts: list[str], dedup: DedupConfig) -> list[bytes]:
    """One MinHash signature per text (num_perm uint32 values as bytes)."""
    from datasketch import MinHash

    hashes = MinHash.bulk([shingles(t, dedup.shingle_size) for t in texts], num_perm=dedup.num_perm,
                          seed=_MINHASH_SEED)
    return [m.hashvalues.astype(np.uint32).tobytes() for m in hashes]


class DuplicateFinder:
    """Feed records in order; `check` says whether one duplicates an earlier kept record."""

    def __init__(self, dedup: DedupConfig) -> None:
        self.dedup = dedup
        self._seen_exact: set[bytes] = set()
        self._lsh = None
        self._kept_signatures: dict[int, np.ndarray] = {}
        self._scheme = None
        if dedup.near:
            from datasketch import MinHash, MinHashLSH

            # Band/row split tuned for recall (false negatives weigh 0.95): every candidate is
            # confirmed against the signature's Jaccard estimate, so extra candidates only cost a
            # comparison, while a missed band match is a kept duplicate.
            self._lsh = MinHashLSH(threshold=dedup.threshold, num_perm=dedup.num_perm, weights=(0.05, 0.95))
            self._scheme = MinHash(num_perm=dedup.num_perm, seed=_MINHASH_SEED).scheme

    def check(self, key: int, exact: bytes, signature: bytes) -> str | None:
        """None if the record is kept (and remembered), else the reason it is dropped."""
        if self.dedup.exact and exact in self._seen_exact:
            return "duplicate_exact"
        if self._lsh is not None:
            from datasketch import LeanMinHash

            values = np.frombuffer(signature, dtype=np.uint32)
            minhash = LeanMinHash(seed=_MINHASH_SEED, hashvalues=values, scheme=self._scheme)
            # LSH returns candidates that share a band; confirm with the estimated Jaccard so
            # unlucky band collisions are not dropped.
            for other in self._lsh.query(minhash):
                if float(np.mean(self._kept_signatures[other] == values)) >= self.dedup.threshold:
                    return "duplicate_near"
            self._lsh.insert(key, minhash, check_duplication=False)
            self._kept_signatures[key] = values
        if self.dedup.exact:
            self._seen_exact.add(exact)
        return None
