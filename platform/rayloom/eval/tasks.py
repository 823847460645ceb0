"""The task registry: a task is one YAML entry (data, template, shots, metrics) over a small JSONL file.

Every `*.yaml` under conf/tasks/ (and eval.task_dirs) maps task names to entries::

    demo_arith:
      kind: generate                # generate | multiple_choice | perplexity | refusal | bias
      data: demo_arith.jsonl        # relative to the YAML file; or an absolute path / s3:// URI;
                                    # or "py:module:function" returning a list of dicts
      template: demo_arith          # chat format: a prompt template of conf/prompts (the registry
                                    # serving uses, rayloom.prompts); shots come from it
      shots: 0
      target: answer                # generate: the field holding the reference (str or list)
      metrics: [exact_match]
      max_tokens: 8

Text-format tasks (`format: text`) carry their prompt inline (`prompt: "Question: {question}\\nAnswer:"`)
and draw few-shot examples from `fewshot_data` or, without it, from the first `shots` rows of the
data (which are then not evaluated). Unknown keys, missing files and wrong kinds fail with the file
and task named.
"""

from __future__ import annotations

import inspect
import json
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rayloom import storage
from rayloom.config import conf_dir
from rayloom.errors import UserError

KINDS = ("generate", "multiple_choice", "perplexity", "refusal", "bias")
FORMATS = ("chat", "text")
GENERATE_METRICS = ("exact_match", "contains", "bleu", "chrf", "rouge")
PY_PREFIX = "py:"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    data: str
    description: str = ""
    format: str = "chat"
    # chat format: a prompt-template reference of the serving registry ("name" or "name@k"), or
    # an inline template mapping with the registry's fields (system, user, assistant, examples).
    template: str | dict = ""
    # text format: the prompt itself, str.format over the row's fields.
    prompt: str = ""
    # Few-shot examples; None -> the template reference's own ("name@k", or its default_shots).
    shots: int | None = None
    fewshot_data: str = ""
    # template variable -> data field, where they differ.
    variables: dict[str, str] = field(default_factory=dict)
    # generate: field with the reference answer(s); also what text-format few-shot answers show.
    target: str = "answer"
    metrics: tuple[str, ...] = ()
    ignore_case: bool = True
    # Compare only the answer's first line (chat models may go on after the answer).
    first_line: bool = False
    # Keep only rows whose fields equal these values (one file, several tasks).
    where: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 32
    stop: tuple[str, ...] = ()
    # multiple_choice: the choices list and the answer (an index or the choice's text).
    choices: str = "choices"
    answer: str = "answer"
    choice_prefix: str = " "
    # perplexity: the held-out text field; longer texts are split into chunks of this many characters.
    text: str = "text"
    max_chars: int = 2000
    # refusal: which rows must be refused, and the phrases that mark a refusal.
    should_refuse: str = "should_refuse"
    refusal_markers: tuple[str, ...] = ()
    # bias: `context` holds "{term}", filled with each of `terms`; with `continuation` the
    # likelihood gap is reported, else the outcome (generated answer) gap.
    context: str = "context"
    terms: str = "terms"
    continuation: str = "continuation"
    category: str = "category"
    # Alternative templates (chat) / prompts (text) for the robustness probe's paraphrase check.
    paraphrases: tuple[str, ...] = ()
    source: str = ""

    @property
    def is_chat(self) -> bool:
        return self.format == "chat"


_KEYS = {f.name for f in fields(TaskSpec)} - {"name", "source"}
_TUPLES = ("metrics", "stop", "refusal_markers", "paraphrases")


def _default_tasks_dir() -> Path:
    return conf_dir() / "tasks"


@dataclass(frozen=True)
class TaskRegistry:
    tasks: dict[str, TaskSpec]

    def names(self) -> list[str]:
        return sorted(self.tasks)

    def get(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise UserError(f"unknown eval task {name!r}; available: {', '.join(self.names()) or 'none'} "
                            "(tasks are YAML entries in conf/tasks/ or eval.task_dirs)")
        return self.tasks[name]


def load_task_registry(extra_dirs: list[str] | tuple[str, ...] = ()) -> TaskRegistry:
    tasks: dict[str, TaskSpec] = {}
    for folder in (_default_tasks_dir(), *map(Path, extra_dirs)):
        if not folder.is_dir():
            raise UserError(f"eval task folder {folder} does not exist")
        for file in sorted(folder.glob("*.yaml")):
            for spec in _read_task_file(file):
                if spec.name in tasks:
                    raise UserError(f"eval task {spec.name!r} is defined twice ({tasks[spec.name].source} and {file})")
                tasks[spec.name] = spec
    return TaskRegistry(tasks)


def _read_task_file(file: Path) -> list[TaskSpec]:
    try:
        entries = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"eval task file {file}: not valid YAML ({exc})") from None
    if not isinstance(entries, dict):
        raise UserError(f"eval task file {file}: expected a mapping of task name -> entry")
    return [parse_task(name, entry, file) for name, entry in entries.items()]


def parse_task(name: str, entry: Any, file: Path) -> TaskSpec:
    where = f"eval task {name!r} ({file})"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown} (allowed: {sorted(_KEYS)})")
    values = dict(entry)
    for key in _TUPLES:
        if key in values:
            if not isinstance(values[key], list):
                raise UserError(f"{where}: '{key}' must be a list")
            values[key] = tuple(str(v) for v in values[key])
    for key in ("variables", "where"):
        if not isinstance(values.get(key, {}), dict):
            raise UserError(f"{where}: '{key}' must be a mapping")
    template = values.get("template", "")
    if isinstance(template, dict):
        unknown_t = sorted(set(template) - {"system", "user", "assistant", "examples"})
        if unknown_t or not isinstance(template.get("user"), str):
            raise UserError(f"{where}: an inline template has a 'user' text and optional system, assistant, "
                            f"examples (unknown: {unknown_t})")
    elif not isinstance(template, str):
        raise UserError(f"{where}: 'template' must be a template name or an inline template mapping")
    for key in ("data", "fewshot_data"):
        if values.get(key):
            values[key] = _resolve_data_path(str(values[key]), file)
    if "data" not in values:
        raise UserError(f"{where}: 'data' is required (a JSONL file next to the YAML, a path, or py:module:function)")
    try:
        spec = TaskSpec(name=name, source=str(file), **values)
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None
    _check(spec, where)
    return spec


def _resolve_data_path(value: str, file: Path) -> str:
    if value.startswith(PY_PREFIX) or storage.is_s3(value) or Path(value).is_absolute():
        return value
    return str((file.parent / value).resolve())


def _check(spec: TaskSpec, where: str) -> None:
    if spec.kind not in KINDS:
        raise UserError(f"{where}: kind={spec.kind!r} must be one of {', '.join(KINDS)}")
    if spec.format not in FORMATS:
        raise UserError(f"{where}: format={spec.format!r} must be one of {', '.join(FORMATS)}")
    if spec.kind != "perplexity":
        if spec.is_chat and not spec.template:
            raise UserError(f"{where}: chat-format tasks name a prompt template (template: <name> of conf/prompts)")
        if not spec.is_chat and not spec.prompt and spec.kind != "bias":
            raise UserError(f"{where}: text-format tasks carry their prompt inline (prompt: '... {{field}} ...')")
    if spec.shots is not None and (not isinstance(spec.shots, int) or spec.shots < 0):
        raise UserError(f"{where}: shots must be an integer >= 0")
    if spec.max_tokens <= 0 or spec.max_chars <= 0:
        raise UserError(f"{where}: max_tokens and max_chars must be > 0")
    if spec.kind == "generate":
        bad = [m for m in spec.metrics if m not in GENERATE_METRICS]
        if bad or not spec.metrics:
            raise UserError(f"{where}: generate tasks list metrics from {', '.join(GENERATE_METRICS)}; got "
                            f"{list(spec.metrics)}")
    elif spec.metrics:
        raise UserError(f"{where}: metrics are fixed for kind={spec.kind} (leave 'metrics' out)")


def load_examples(spec: TaskSpec, max_examples: int | None = None, provider_kwargs: dict | None = None) -> list[dict]:
    """The task's rows (after the rows used as text few-shot examples), at most `max_examples`."""
    rows = _filter(_read_rows(spec.data, spec.name, provider_kwargs), spec)
    if not spec.is_chat and spec.shots and not spec.fewshot_data:
        rows = rows[spec.shots:]
    if spec.kind == "perplexity":
        rows = _chunk_texts(rows, spec)
    if not rows:
        raise UserError(f"eval task {spec.name!r}: no examples in {spec.data}")
    return rows[:max_examples] if max_examples else rows


def _filter(rows: list[dict], spec: TaskSpec) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in spec.where.items())] if spec.where else rows


def fewshot_rows(spec: TaskSpec, provider_kwargs: dict | None = None) -> list[dict]:
    """Solved examples for text-format few-shot prompts."""
    if spec.is_chat or not spec.shots:
        return []
    rows = _filter(_read_rows(spec.fewshot_data or spec.data, spec.name, provider_kwargs), spec)
    if len(rows) < spec.shots:
        raise UserError(f"eval task {spec.name!r}: asked for {spec.shots} shots but only {len(rows)} rows exist")
    return rows[:spec.shots]


def _read_rows(uri: str, task: str, provider_kwargs: dict | None = None) -> list[dict]:
    if uri.startswith(PY_PREFIX):
        return _rows_from_provider(uri[len(PY_PREFIX):], task, provider_kwargs or {})
    if not storage.exists(uri):
        raise UserError(f"eval task {task!r}: data file {uri} does not exist")
    rows = []
    for number, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"eval task {task!r}: {uri} line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"eval task {task!r}: {uri} line {number} is not a JSON object")
        rows.append(row)
    return rows


def _rows_from_provider(target: str, task: str, kwargs: dict) -> list[dict]:
    # A provider is a function returning a list of dicts, e.g. the held-out examples of the data
    # pipeline's demo corpus, so the eval set follows the training format exactly. It receives
    # the keyword arguments it declares among `kwargs` (the runner passes num/seed from data.*).
    # "module:function" (the documented form) or "module.function"; Hydra's locator imports it.
    from hydra.utils import get_method  # here: hydra.utils loads Hydra's runtime; only py: data needs it

    try:
        function = get_method(target.replace(":", "."))
    except (ImportError, AttributeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()
        raise UserError(f"eval task {task!r}: data provider {target!r} is not an importable function "
                        f"({' '.join(reason[:2]) if reason else type(exc).__name__})") from None
    accepted = inspect.signature(function).parameters
    rows = list(function(**{k: v for k, v in kwargs.items() if k in accepted}))
    if not all(isinstance(r, dict) for r in rows):
        raise UserError(f"eval task {task!r}: data provider {target!r} must return a list of dicts")
    return rows


def _chunk_texts(rows: list[dict], spec: TaskSpec) -> list[dict]:
    # Split long held-out texts on paragraph/line boundaries so each piece fits the context.
    out = []
    for index, row in enumerate(rows):
        text = row.get(spec.text)
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"eval task {spec.name!r}: row {index} has no text in field {spec.text!r}")
        piece = ""
        for line in text.splitlines(keepends=True):
            while len(line) > spec.max_chars:
                if piece:
                    out.append({**row, spec.text: piece})
                    piece = ""
                out.append({**row, spec.text: line[:spec.max_chars]})
                line = line[spec.max_chars:]
            if len(piece) + len(line) > spec.max_chars and piece:
                out.append({**row, spec.text: piece})
                piece = ""
            piece += line
        if piece.strip():
            out.append({**row, spec.text: piece})
    return out


def format_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}
