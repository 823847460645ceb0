"""Turn a task's example into a prompt: chat messages from serving's template registry, or inline text.

Chat-format tasks use the same registry as `rayloom serve` / `rayloom chat` (rayloom.prompts,
files in conf/prompts/): zero-shot or few-shot ("name@k" or the task's `shots`), so an evaluation
measures the prompts users are served with. Text-format tasks (log-likelihood, base models) carry
an inline `prompt` and prepend `shots` solved examples.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rayloom.errors import UserError
from rayloom.eval.tasks import TaskSpec, format_fields
from rayloom.prompts import PromptTemplate, load_registry, parse_ref


class PromptBuilder:
    """Renders one task's examples; `user_template` swaps the user text (paraphrase probe)."""

    def __init__(self, spec: TaskSpec, fewshot: list[dict], registry=None, user_template: str | None = None,
                 template_ref: str | None = None):
        self.spec = spec
        self.fewshot = fewshot
        self.template = None
        self.shots: int | None = spec.shots
        if spec.is_chat and spec.kind != "perplexity":
            if isinstance(spec.template, dict) and not template_ref:
                # Inline template of the task file: the registry's PromptTemplate, not registered.
                inline = spec.template
                template = PromptTemplate(name=spec.name, user=inline["user"], system=inline.get("system", ""),
                                          assistant=inline.get("assistant", "{answer}"),
                                          examples=tuple(inline.get("examples", ())))
                ref_shots = 0
            else:
                registry = registry or load_registry()
                name, ref_shots = parse_ref(template_ref or spec.template)
                template = registry.get(name)
            if user_template:
                # A paraphrase keeps the template's system text and examples, rewording the question.
                unknown = format_fields(user_template) - set(template.variables)
                if unknown:
                    raise UserError(f"eval task {spec.name!r}: paraphrase {user_template!r} uses {sorted(unknown)}, "
                                    f"not variables of its template {list(template.variables)}")
                template = replace(template, user=user_template)
            self.template = template
            self.shots = spec.shots if spec.shots is not None else ref_shots
        self.text_prompt = user_template if (user_template and not spec.is_chat) else spec.prompt

    @property
    def variables(self) -> tuple[str, ...]:
        """Template variables, i.e. the inputs that perturbations may change."""
        if self.template is not None:
            return tuple(self.template.variables)
        return tuple(sorted(format_fields(self.text_prompt)))

    def values(self, row: dict) -> dict[str, Any]:
        out = {}
        for variable in self.variables:
            column = self.spec.variables.get(variable, variable)
            if column not in row:
                raise UserError(f"eval task {self.spec.name!r}: an example lacks field {column!r} "
                                f"(template variable {variable!r}); it has {sorted(row)}")
            out[variable] = row[column]
        return out

    def chat(self, values: dict[str, Any]) -> list[dict[str, str]]:
        assert self.template is not None
        return self.template.messages(self.shots, **values)

    def text(self, values: dict[str, Any]) -> str:
        shots = []
        for example in self.fewshot:
            if self.spec.kind == "multiple_choice":
                answer = self.spec.choice_prefix + _choice_text(example, self.spec)
            else:
                answer = example.get(self.spec.target, "")
                answer = " " + str(answer[0] if isinstance(answer, list) and answer else answer)
            shots.append(self.text_prompt.format(**example) + answer)
        return "".join(shot + "\n\n" for shot in shots) + self.text_prompt.format(**values)

    def render(self, values: dict[str, Any]) -> dict[str, Any]:
        """Request fields: {"messages": [...]} or {"prompt": "..."}."""
        if self.spec.is_chat:
            return {"messages": self.chat(values)}
        return {"prompt": self.text(values)}


def _choice_text(row: dict, spec: TaskSpec) -> str:
    choices = row.get(spec.choices)
    index = answer_index(row, spec)
    return str(choices[index])


def answer_index(row: dict, spec: TaskSpec) -> int:
    choices = row.get(spec.choices)
    answer = row.get(spec.answer)
    if not isinstance(choices, list) or len(choices) < 2:
        raise UserError(f"eval task {spec.name!r}: field {spec.choices!r} must be a list of at least two choices")
    if isinstance(answer, bool) or answer is None:
        raise UserError(f"eval task {spec.name!r}: field {spec.answer!r} must be a choice index or a choice's text")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise UserError(f"eval task {spec.name!r}: answer index {answer} is out of range for {len(choices)} choices")
        return answer
    if str(answer) not in [str(c) for c in choices]:
        raise UserError(f"eval task {spec.name!r}: answer {answer!r} is not one of the choices {choices}")
    return [str(c) for c in choices].index(str(answer))
