"""The offline demo corpus (`data=demo`): nothing is downloaded.

- pretrain: the paragraphs of CPython's bundled help text (pydoc_data.topics);
- sft: generated instruction tasks whose answers can be checked by exact match - add two small
  numbers, the number after n, a word in capital letters, repeat a word - as chat records, plus
  (data.demo_text_weight > 0) the pre-training paragraphs, so SFT does not unlearn the text;
- preference: the same tasks as prompt/chosen/rejected, chosen correct and rejected wrong.

Each task's prompts are split once, by a seeded shuffle, into a training pool and held-out
evaluation examples: `demo_eval_examples()` returns the held-out prompts with their answers
(never in the SFT or preference records), and `is_correct()` checks a model's completion.
The demo stage also writes them as eval.jsonl beside the raw files.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import dataclass
from functools import cache

from rayloom import storage
from rayloom.config import DataConfig, RayloomConfig, SourceConfig

TASKS = ("add", "next", "upper", "repeat")
RAW_DIR = "demo-raw"
EVAL_FILE = "eval.jsonl"
# Files per part: several files let Ray read and parse them in parallel.
_NUM_FILES = 4


@dataclass(frozen=True)
class DemoExample:
    task: str
    prompt: str
    answer: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@cache
def _words() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    return tuple(sorted({w for key in topics for w in re.findall(r"\b[a-z]{3,8}\b", topics[key])}))


def _universe(task: str) -> list[DemoExample]:
    """Every example of a task, in a fixed order."""
    if task == "add":
        return [DemoExample(task, f"What is {a} + {b}?", str(a + b)) for a in range(20) for b in range(20)]
    if task == "next":
        return [DemoExample(task, f"What number comes after {n}?", str(n + 1)) for n in range(500)]
    if task == "upper":
        return [DemoExample(task, f"Write {w} in capital letters.", w.upper()) for w in _words()]
    assert task == "repeat", task
    return [DemoExample(task, f"Repeat this word: {w}", w) for w in _words()]


def _pools(seed: int, num_eval: int) -> dict[str, tuple[list[DemoExample], list[DemoExample]]]:
    """task -> (training pool, held-out eval examples), a seeded split of the task's universe."""
    per_task = [num_eval // len(TASKS) + (1 if i < num_eval % len(TASKS) else 0) for i in range(len(TASKS))]
    pools = {}
    for task, held_out in zip(TASKS, per_task, strict=True):
        examples = _universe(task)
        random.Random(f"{seed}:{task}").shuffle(examples)
        pools[task] = (examples[held_out:], examples[:held_out])
    return pools


def demo_eval_examples(num: int = 200, seed: int = 0) -> list[dict]:
    """Held-out {task, prompt, answer} examples (the same ones for the same num/seed as the data job)."""
    return [e.as_dict() for task in TASKS for e in _pools(seed, num)[task][1]]


def is_correct(answer: str, completion: str) -> bool:
    """Exact match on the completion's first line (the end-of-turn token, if decoded, is ignored)."""
    text = completion.replace("<|end|>", "\n").strip()
    return (text.splitlines()[0].strip() if text else "") == answer


def _training_examples(num: int, seed: int, num_eval: int) -> list[DemoExample]:
    """Round-robin over the tasks' training pools, up to num examples."""
    pools = [list(train) for train, _ in _pools(seed, num_eval).values()]
    out: list[DemoExample] = []
    position = 0
    while len(out) < num and any(position < len(p) for p in pools):
        out += [p[position] for p in pools if position < len(p)][: num - len(out)]
        position += 1
    return out


def _wrong_answer(example: DemoExample, rng: random.Random) -> str:
    if example.task in ("add", "next"):
        value = int(example.answer)
        wrong = value + rng.choice([d for d in (-2, -1, 1, 2) if value + d >= 0])
        return str(wrong)
    word = example.answer.lower()
    if example.task == "upper":
        return rng.choice([word, word.capitalize()])
    return word[::-1] if word[::-1] != word else word + "s"


def sft_records(num: int, seed: int = 0, num_eval: int = 200) -> list[dict]:
    return [{"messages": [{"role": "user", "content": e.prompt}, {"role": "assistant", "content": e.answer}],
             "task": e.task} for e in _training_examples(num, seed, num_eval)]


def preference_records(num: int, seed: int = 0, num_eval: int = 200) -> list[dict]:
    rng = random.Random(f"{seed}:preference")
    return [{"prompt": e.prompt, "chosen": e.answer, "rejected": _wrong_answer(e, rng), "task": e.task}
            for e in _training_examples(num, seed, num_eval)]


def pretrain_records() -> list[dict]:
    """The paragraphs of CPython's help topics, as text records (duplicates included: dedup's job),
    and counting text: the numbers 0-1004 in order, in windows of 15 that overlap by 5, as a real
    corpus holds them (the held-out "next" questions are never in it, only the numbers)."""
    from pydoc_data.topics import topics

    help_text = [{"text": p.strip(), "topic": key} for key in sorted(topics)
                 for p in re.split(r"\n\s*\n", topics[key]) if p.strip()]
    counting = [{"text": f"Counting from {start}: " + " ".join(str(n) for n in range(start, start + 15)) + ".",
                 "topic": "counting"} for start in range(0, 1000, 10)]
    return help_text + counting


def _write_jsonl(uri: str, rows: list[dict]) -> None:
    storage.write_text(uri, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def write_demo_part(root: str, kind: str, data: DataConfig) -> str:
    """Write one part of the corpus as JSONL files under <root>/<kind>/; returns that directory."""
    rows = {"pretrain": pretrain_records,
            "sft": lambda: sft_records(data.num_demo_records, data.seed, data.num_demo_eval),
            "preference": lambda: preference_records(data.num_demo_records, data.seed, data.num_demo_eval)}[kind]()
    directory = storage.join(root, kind)
    for i in range(_NUM_FILES):
        _write_jsonl(storage.join(directory, f"part-{i:05d}.jsonl"), rows[i::_NUM_FILES])
    _write_jsonl(storage.join(root, EVAL_FILE), demo_eval_examples(data.num_demo_eval, data.seed))
    return directory


def demo_raw_root(cfg: RayloomConfig) -> str:
    return storage.join(cfg.storage.root, "data", RAW_DIR)


def demo_eval_uri(cfg: RayloomConfig) -> str:
    return storage.join(demo_raw_root(cfg), EVAL_FILE)


def demo_data_config(cfg: RayloomConfig) -> DataConfig:
    """cfg.data with the generated demo part (cfg.data.demo) as its only source."""
    data = cfg.data
    schema = {"pretrain": "text", "sft": "messages", "preference": "preference"}[data.demo]
    directory = write_demo_part(demo_raw_root(cfg), data.demo, data)
    sources = [SourceConfig(path=directory, format="jsonl", schema=schema)]
    if data.demo == "sft" and data.demo_text_weight > 0:
        text = write_demo_part(demo_raw_root(cfg), "pretrain", data)
        sources.append(SourceConfig(path=text, format="jsonl", schema="text", weight=data.demo_text_weight))
    return dataclasses.replace(data, sources=sources)
