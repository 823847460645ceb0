"""Golden inputs for the data pipeline tests: small files with planted problems and known counts.

Imported by tests/integration/test_data_*.py (`from helpers.data_fixtures import ...`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rayloom.data.schema import IGNORE_INDEX

_VOCAB = ("river stone light window garden paper music silver forest ocean bridge market winter candle "  # noqa: SIM905
          "engine travel mirror basket violet harbor ladder planet thunder velvet orchard meadow lantern "
          "compass feather island marble pepper saddle timber needle copper walnut").split()


def _doc(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_VOCAB) for _ in range(words)) + "."


def write_golden(root: Path) -> dict:
    """Write three sources under `root`; return their SourceConfig dicts and the expected counts."""
    rng = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    base = _doc(rng, 100)
    near = base.split()
    near[50] = "zebra"  # one changed word in 100: Jaccard of the 5-word shingles ~0.9
    web_lines = [
        json.dumps({"text": base}),
        json.dumps({"text": _doc(rng, 80)}),
        json.dumps({"text": "  " + base.upper() + "  "}),        # exact duplicate (case/space-normalised)
        json.dumps({"text": " ".join(near)}),                     # near duplicate
        '{"text": "an unterminated string',                      # malformed_json
        json.dumps({"txt": "the wrong field"}),                   # schema
        json.dumps({"text": "   "}),                              # empty
        None,                                                     # not_utf8 (raw bytes below)
        json.dumps({"text": "Lorem ipsum dolor sit amet, click here for more"}),  # boilerplate
        json.dumps({"text": "tiny"}),                             # too_short (min_chars=8)
        json.dumps({"text": "#### $$$$ %%%% &&&& @@@@ !!!! ^^^^"}),  # symbols
        json.dumps({"text": "buy now " * 60}),                     # repetition
    ]
    unique_web = [json.dumps({"text": _doc(rng, rng.randint(20, 140))}) for _ in range(40)]
    lines = [(line.encode() if line is not None else b'{"text": "caf\xe9 au lait"}') for line in web_lines + unique_web]
    (root / "web").mkdir(exist_ok=True)
    (root / "web" / "part-0.jsonl").write_bytes(b"\n".join(lines[:20]) + b"\n")
    (root / "web" / "part-1.jsonl").write_bytes(b"\n".join(lines[20:]) + b"\n\n")
    (root / "web" / "_SUCCESS").write_text("")  # markers are skipped

    chats = []
    answers = []
    for i in range(20):
        answer_1, answer_2 = f"{i * 7 + 3} apples", f"{i + 11} pears"
        answers.append(f"{answer_1}<|end|>{answer_2}<|end|>")
        chats.append({"messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"How many apples are in basket {i}?"},
            {"role": "assistant", "content": answer_1},
            {"role": "user", "content": f"And pears in crate {i}?"},
            {"role": "assistant", "content": answer_2},
        ]})
    chats.append({"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "boop"}]})
    pq.write_table(pa.Table.from_pylist(chats), root / "chat.parquet")

    (root / "books").mkdir(exist_ok=True)
    paragraphs = [_doc(rng, rng.randint(30, 60)) for _ in range(12)]
    (root / "books" / "a.txt").write_text("\n\n".join(paragraphs[:6]) + "\n")
    (root / "books" / "b.md").write_text("\n\n  \n".join(paragraphs[6:]) + "\n")

    sources = [
        {"path": str(root / "web"), "schema": "text"},
        {"path": str(root / "chat.parquet"), "schema": "messages", "weight": 2.0},
        {"path": str(root / "books"), "format": "text", "text_unit": "paragraph", "weight": 0.5},
    ]
    expected = {
        "read": len(lines) + len(chats) + len(paragraphs),
        "bad": {"malformed_json": 1, "schema": 2, "empty": 1, "not_utf8": 1},
        "filtered": {"boilerplate": 1, "too_short": 1, "symbols": 1, "repetition": 1},
        "duplicates": {"duplicate_exact": 1, "duplicate_near": 1},
        "chat_answers": answers,
        "kept_per_source": [len(lines) - 4 - 4 - 2, 20, 12],
    }
    return {"sources": sources, "expected": expected}


def lm_segments(row: dict) -> list[dict]:
    """Split a packed row into its documents by position_ids, checking the packing invariants."""
    ids, labels, pos, mask = (list(row[k]) for k in ("input_ids", "labels", "position_ids", "attention_mask"))
    n = len(ids)
    real = sum(mask)
    assert mask == [1] * real + [0] * (n - real), "padding is only at the end"
    assert all(labels[i] == IGNORE_INDEX for i in range(real, n))
    segments, start = [], 0
    for i in range(1, real + 1):
        if i == real or pos[i] == 0:
            seg = {"ids": ids[start:i], "labels": labels[start:i], "pos": pos[start:i]}
            assert seg["pos"] == list(range(i - start)), "positions count up from 0 inside a document"
            assert seg["labels"][0] == IGNORE_INDEX, "a document's first label never points across a boundary"
            assert all(lab in (IGNORE_INDEX, tok) for lab, tok in zip(seg["labels"], seg["ids"], strict=True))
            segments.append(seg)
            start = i
    return segments
