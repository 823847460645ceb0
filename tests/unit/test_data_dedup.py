"""Distributed dedup's record-level pieces against the single-process driver pass they replace (no Ray).

`ReferenceFinder` is the previous implementation (one ordered pass with an exact-hash set and
datasketch's MinHashLSH), kept here as the reference: band keys grouped per hash partition +
resolve_groups must drop exactly the same records for the same reasons.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from rayloom.config import DedupConfig
from rayloom.data.cleaning import text_words
from rayloom.data.dedup import (
    band_keys,
    candidate_groups,
    exact_key,
    exact_key64,
    lsh_bands,
    minhash_signatures,
    resolve_groups,
    shingles,
)

_SEED = 1


class ReferenceFinder:
    """Feed records in order; `check` says whether one duplicates an earlier kept record."""

    def __init__(self, dedup: DedupConfig) -> None:
        from datasketch import MinHash, MinHashLSH

        self.dedup = dedup
        self.seen: set[bytes] = set()
        self.lsh = MinHashLSH(threshold=dedup.threshold, num_perm=dedup.num_perm, weights=(0.05, 0.95)) \
            if dedup.near else None
        self.kept: dict[int, np.ndarray] = {}
        self.scheme = MinHash(num_perm=dedup.num_perm, seed=_SEED).scheme

    def check(self, key: int, exact: bytes, signature: bytes) -> str | None:
        from datasketch import LeanMinHash

        if self.dedup.exact and exact in self.seen:
            return "duplicate_exact"
        if self.lsh is not None:
            values = np.frombuffer(signature, dtype=np.uint32)
            minhash = LeanMinHash(seed=_SEED, hashvalues=values, scheme=self.scheme)
            for other in self.lsh.query(minhash):
                if float(np.mean(self.kept[other] == values)) >= self.dedup.threshold:
                    return "duplicate_near"
            self.lsh.insert(key, minhash, check_duplication=False)
            self.kept[key] = values
        if self.dedup.exact:
            self.seen.add(exact)
        return None


def _corpus(seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    bases = [[rng.choice(words) for _ in range(rng.randint(30, 90))] for _ in range(n // 4)]
    texts = []
    for _ in range(n):
        doc = list(rng.choice(bases))
        for _ in range(rng.choice([0, 0, 1, 2, 4, 8, 30])):   # exact copies, near copies, chains, unrelated
            doc[rng.randrange(len(doc))] = rng.choice(words)
        text = " ".join(doc)
        texts.append(text.upper() if rng.random() < 0.1 else text)
    return texts


def _distributed(ids: list[int], texts: list[str], dedup: DedupConfig, parts: int) -> dict[int, str]:
    exact = [exact_key(t) for t in texts]
    ids_np = np.asarray(ids, dtype=np.int64)
    if dedup.near:
        sigs = minhash_signatures(texts, dedup)
        matrix = np.frombuffer(b"".join(sigs), dtype=np.uint32).reshape(len(texts), -1)
        bands = lsh_bands(dedup)
        keys = band_keys(matrix, *bands).reshape(-1)
        key_ids = np.repeat(ids_np, bands[0])
    else:
        sigs = [b""] * len(texts)
        keys, key_ids = exact_key64(exact), ids_np
    groups = []
    for part in range(parts):   # what the groupby on the hash partition does
        mine = keys % np.uint64(parts) == part
        groups += candidate_groups(keys[mine], key_ids[mine])
    return resolve_groups(groups, dict(zip(ids, exact, strict=True)),
                          {i: np.frombuffer(s, dtype=np.uint32) for i, s in zip(ids, sigs, strict=True) if s},
                          dedup)


@pytest.mark.parametrize("dedup", [DedupConfig(), DedupConfig(near=False), DedupConfig(exact=False),
                                   DedupConfig(threshold=0.6, num_perm=64)], ids=["both", "exact", "near", "t0.6"])
@pytest.mark.parametrize("seed", [0, 1])
def test_distributed_dedup_drops_what_the_ordered_driver_pass_drops(dedup, seed):
    texts = _corpus(seed)
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(1, 10**9), len(texts)))     # any increasing ids (source, file, position)
    sigs = minhash_signatures(texts, dedup) if dedup.near else [b""] * len(texts)
    finder = ReferenceFinder(dedup)
    expected = {}
    for i, text, sig in zip(ids, texts, sigs, strict=True):
        reason = finder.check(i, exact_key(text), sig)
        if reason:
            expected[i] = reason
    assert len(expected) >= 40 and {"duplicate_exact", "duplicate_near"} & set(expected.values())
    for parts in (1, 7):
        assert _distributed(ids, texts, dedup, parts) == expected


def test_chains_keep_what_the_first_occurrence_rule_keeps():
    rng = random.Random(5)
    words = [f"v{i}" for i in range(500)]
    a = [rng.choice(words) for _ in range(200)]
    b, c = list(a), list(a)
    for i in range(0, 200, 12):
        b[i] = "x"           # b ~ a
    for i in range(0, 200, 6):
        c[i] = "x"           # c ~ b, but c !~ a: a kept, b dropped, c kept (b is not kept)
    texts = [" ".join(a), " ".join(b), " ".join(c)]
    dedup = DedupConfig(threshold=0.7)
    got = _distributed([1, 2, 3], texts, dedup, 3)
    finder = ReferenceFinder(dedup)
    sigs = minhash_signatures(texts, dedup)
    want = {i: r for i, t, s in zip([1, 2, 3], texts, sigs, strict=True) if (r := finder.check(i, exact_key(t), s))}
    assert got == want
    assert shingles("a b", 5) == [b"a b"]
    # The read task passes the words the quality filters already split: the same signatures.
    assert minhash_signatures(texts, dedup, [text_words(t) for t in texts]) == sigs


def test_shuffle_tasks_find_the_groups_of_one_pass_over_everything():
    """dedup_ray's map/reduce functions (run here without Ray): keys of runs of blocks split into
    partitions, reduced per partition, give the candidate groups of one pass over all records;
    an empty block without columns is skipped; the chunking keeps neighbouring blocks together."""
    import pyarrow as pa

    from rayloom.data.dedup_ray import _chunks, _groups_task, _keys_task, _links_task, _resolve, _signed_task

    dedup = DedupConfig()
    texts = _corpus(3, 120)
    ids = np.arange(1, len(texts) + 1, dtype=np.int64)
    sigs = minhash_signatures(texts, dedup)
    rows = [{"doc_id": int(i), "status": "ok" if i % 17 else "bad", "exact": exact_key(t), "signature": s}
            for i, t, s in zip(ids, texts, sigs, strict=True)]
    blocks = [pa.Table.from_pylist(rows[a:a + 25]) for a in range(0, len(rows), 25)] + [pa.table({})]
    assert [len(c) for c in _chunks(list(range(7)), 3)] == [2, 3, 2] and _chunks([], 4) == []

    bands = lsh_bands(dedup)
    ok = [r for r in rows if r["status"] == "ok"]
    matrix = np.frombuffer(b"".join(r["signature"] for r in ok), dtype=np.uint32).reshape(len(ok), -1)
    expected = candidate_groups(band_keys(matrix, *bands).reshape(-1),
                                np.repeat(np.asarray([r["doc_id"] for r in ok]), bands[0]))
    parts = 3
    mapped = [_keys_task(bands, parts, *chunk) for chunk in _chunks(blocks, 2)]
    reduced = [_groups_task(*(m[p] for m in mapped)) for p in range(parts)]
    got = [np.asarray(g) for table, _ in reduced for g in table.column("members").to_pylist()]
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected)) and expected
    members = [m for _, m in reduced]
    signed = [_signed_task(len(chunk), *chunk, *members) for chunk in _chunks(blocks, 2)]
    for p in range(parts):   # each partition gets exactly the records of its own groups
        got_p = pa.concat_tables([s[p] for s in signed]).column("doc_id").to_pylist()
        assert sorted(got_p) == members[p].tolist()
    # The links of each partition, then the one ordered pass: what the ordered driver pass drops.
    linked = [_links_task(dedup, reduced[p][0], *(s[p] for s in signed)) for p in range(parts)]
    table, counts, info = _resolve(parts, *members, *(t for t, _ in linked), *(n for _, n in linked))
    finder = ReferenceFinder(dedup)
    want = {int(r["doc_id"]): reason for r in ok
            if (reason := finder.check(int(r["doc_id"]), r["exact"], r["signature"]))}
    assert dict(zip(table.column("doc_id").to_pylist(), table.column("reason").to_pylist(), strict=True)) == want
    assert want and sum(counts.values()) == len(want) and info["groups"] == len(expected)
    assert info["candidates"] == len({int(i) for g in expected for i in g})
