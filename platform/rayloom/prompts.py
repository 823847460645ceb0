"""Named prompt templates with zero-shot and few-shot variants, stored in conf/prompts/.

A neutral module below both of its users: serving (`rayloom chat --template`) and evaluation
(chat-format tasks) render the same templates, and neither package imports the other for them.

One YAML file per template::

    name: demo_arith
    description: ...
    system: You are a careful calculator. Reply with the number only.   # optional
    user: "What is {question}?"          # str.format fields = the template's variables
    assistant: "{answer}"                # how an example's answer is written
    default_shots: 0                     # shots used by "demo_arith" (vs "demo_arith@3")
    examples:                            # few-shot examples: values for user + assistant fields
      - {question: "2 + 2", answer: "4"}

Rendering gives chat messages: the system turn, k example user/assistant pairs, then the user
turn. The model's own chat template (from its tokenizer, the one training used) turns them into
text: `to_prompt(messages, tokenizer)`. The registry: `load_registry()`, `render(ref, **variables)`,
where `ref` is "name" or "name@k".
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayloom.config import conf_dir
from rayloom.errors import UserError


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    user: str
    description: str = ""
    system: str = ""
    assistant: str = "{answer}"
    default_shots: int = 0
    examples: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def variables(self) -> tuple[str, ...]:
        """What a caller provides: the fields of the user (and system) text."""
        return tuple(sorted(_fields(self.user) | _fields(self.system)))

    def messages(self, shots: int | None = None, **variables: Any) -> list[dict[str, str]]:
        shots = self.default_shots if shots is None else shots
        missing = [v for v in self.variables if v not in variables]
        unknown = [v for v in variables if v not in self.variables]
        if missing or unknown:
            raise UserError(f"prompt template {self.name!r} takes variables {list(self.variables)}; "
                            + (f"missing {missing}" if missing else "") + ("; " if missing and unknown else "")
                            + (f"unknown {unknown}" if unknown else ""))
        # An example identical to the question being asked is never shown as a shot.
        pool = [ex for ex in self.examples
                if not variables or any(str(ex.get(k)) != str(v) for k, v in variables.items())]
        if not 0 <= shots <= len(pool):
            raise UserError(f"prompt template {self.name!r} has {len(pool)} usable examples; asked for {shots} shots")
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system.format(**variables)})
        for example in pool[:shots]:
            messages.append({"role": "user", "content": self.user.format(**example)})
            messages.append({"role": "assistant", "content": self.assistant.format(**example)})
        messages.append({"role": "user", "content": self.user.format(**variables)})
        return messages


@dataclass(frozen=True)
class PromptRegistry:
    templates: dict[str, PromptTemplate]

    def names(self) -> list[str]:
        return sorted(self.templates)

    def get(self, name: str) -> PromptTemplate:
        if name not in self.templates:
            raise UserError(f"unknown prompt template {name!r}; available: {', '.join(self.names()) or 'none'}")
        return self.templates[name]

    def render(self, ref: str, shots: int | None = None, **variables: Any) -> list[dict[str, str]]:
        """Messages for `ref` ("name" = its default shots, "name@k" = k shots, or `shots=`)."""
        name, ref_shots = parse_ref(ref)
        return self.get(name).messages(shots if shots is not None else ref_shots, **variables)

    def render_text(self, ref: str, tokenizer: Any, shots: int | None = None, **variables: Any) -> str:
        """The prompt string for a completions call / offline generation, via the chat template."""
        return to_prompt(self.render(ref, shots, **variables), tokenizer)


def parse_ref(ref: str) -> tuple[str, int | None]:
    name, sep, shots = ref.partition("@")
    if not sep:
        return name, None
    if not shots.isdigit():
        raise UserError(f"prompt template reference {ref!r}: expected 'name' or 'name@<shots>'")
    return name, int(shots)


def to_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """Render messages with the model's own chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model's tokenizer has no chat template; send the messages to /v1/chat/completions "
                        "of an endpoint that defines one, or use a model trained with a chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def default_prompts_dir() -> Path:
    return conf_dir() / "prompts"


def load_registry(path: str | Path | None = None) -> PromptRegistry:
    """Read every *.yaml under `path` (default conf/prompts) into a registry; errors name the file."""
    root = Path(path) if path is not None else default_prompts_dir()
    if not root.is_dir():
        raise UserError(f"prompt template directory {root} does not exist")
    templates: dict[str, PromptTemplate] = {}
    for file in sorted(root.glob("*.yaml")):
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"prompt template {file}: not valid YAML ({exc})") from None
        template = _from_dict(data, file)
        if template.name in templates:
            raise UserError(f"prompt template {file}: name {template.name!r} is defined twice")
        templates[template.name] = template
    return PromptRegistry(templates)


def render(ref: str, shots: int | None = None, registry: PromptRegistry | None = None,
           **variables: Any) -> list[dict[str, str]]:
    return (registry or load_registry()).render(ref, shots, **variables)


_KEYS = {"name", "description", "system", "user", "assistant", "default_shots", "examples"}


def _from_dict(data: Any, file: Path) -> PromptTemplate:
    if not isinstance(data, dict):
        raise UserError(f"prompt template {file}: expected a mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise UserError(f"prompt template {file}: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    for key in ("name", "user"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"prompt template {file}: '{key}' must be a non-empty string")
    if "@" in data["name"] or ":" in data["name"]:
        raise UserError(f"prompt template {file}: name {data['name']!r} must not contain '@' or ':'")
    examples = data.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise UserError(f"prompt template {file}: 'examples' must be a list of mappings")
    template = PromptTemplate(
        name=data["name"], user=data["user"], description=str(data.get("description", "")),
        system=str(data.get("system") or ""), assistant=str(data.get("assistant", "{answer}")),
        default_shots=int(data.get("default_shots", 0)), examples=tuple(examples),
    )
    needed = _fields(template.user) | _fields(template.assistant)
    for i, example in enumerate(examples):
        missing = needed - set(example)
        if missing:
            raise UserError(f"prompt template {file}: examples[{i}] lacks {sorted(missing)}")
    if not 0 <= template.default_shots <= len(examples):
        raise UserError(f"prompt template {file}: default_shots={template.default_shots} but only "
                        f"{len(examples)} examples")
    return template
