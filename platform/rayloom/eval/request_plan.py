"""Plan a run: every task (and robustness variant) becomes requests; scoring maps answers back.

All requests of a run are answered by the target in one pass (one engine load per replica), then
each plan scores its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config import EvalConfig
from rayloom.errors import UserError
from rayloom.eval import bias, choice, generation, perplexity, robustness
from rayloom.eval.prompt_builder import PromptBuilder
from rayloom.eval.requests import EvalRequest, EvalResponse
from rayloom.eval.results import TaskResult
from rayloom.eval.tasks import TaskRegistry, TaskSpec, fewshot_rows, load_examples
from rayloom.prompts import load_registry

ROBUST_KINDS = ("generate", "multiple_choice")


@dataclass
class TaskPlan:
    spec: TaskSpec
    rows: list[dict]
    requests: list[EvalRequest]
    # "" for the clean task; a perturbation name ("typo", "paraphrase", ...) for a robustness variant.
    variant: str = ""
    extra: dict = field(default_factory=dict)

    def score(self, responses: dict[str, EvalResponse]) -> TaskResult:
        kind = self.spec.kind
        if kind in ("generate", "refusal"):
            return generation.score(self.spec, self.rows, self.requests, responses)
        if kind == "multiple_choice":
            return choice.score(self.spec, self.rows, self.requests, responses)
        if kind == "perplexity":
            return perplexity.score(self.spec, self.rows, self.requests, responses)
        return bias.score(self.spec, self.rows, self.requests, responses)


def _requests(spec: TaskSpec, rows: list[dict], builder: PromptBuilder, prefix: str,
              values: list[dict] | None = None) -> list[EvalRequest]:
    if spec.kind in ("generate", "refusal"):
        return generation.build_requests(spec, rows, builder, prefix, values)
    if spec.kind == "multiple_choice":
        return choice.build_requests(spec, rows, builder, prefix, values)
    if spec.kind == "perplexity":
        return perplexity.build_requests(spec, rows, prefix)
    return bias.build_requests(spec, rows, builder, prefix)


def build_plans(cfg: EvalConfig, registry: TaskRegistry, prompt_registry=None,
                provider_kwargs: dict | None = None) -> list[TaskPlan]:
    """`provider_kwargs`: arguments for tasks whose data is a Python provider (e.g. num/seed of the
    demo corpus, so its held-out split is the one the data job made)."""
    if prompt_registry is None:
        prompt_registry = load_registry()
    names = list(cfg.tasks)
    for name in cfg.robustness.tasks:
        if name not in names:
            names.append(name)
    plans = []
    for name in names:
        spec = registry.get(name)
        if spec.kind == "bias":
            spec = bias.text_spec(spec)
        rows = load_examples(spec, cfg.max_examples, provider_kwargs)
        builder = PromptBuilder(spec, fewshot_rows(spec, provider_kwargs), prompt_registry)
        plans.append(TaskPlan(spec, rows, _requests(spec, rows, builder, name)))
        if name in cfg.robustness.tasks:
            plans.extend(_robustness_plans(cfg, spec, rows, builder, prompt_registry))
    return plans


def _robustness_plans(cfg: EvalConfig, spec: TaskSpec, rows: list[dict], builder: PromptBuilder,
                      prompt_registry) -> list[TaskPlan]:
    if spec.kind not in ROBUST_KINDS:
        raise UserError(f"eval.robustness.tasks: {spec.name!r} is a {spec.kind} task; the robustness probe "
                        f"re-asks {' or '.join(ROBUST_KINDS)} tasks")
    plans = []
    clean_values = [builder.values(row) for row in rows]
    for name in cfg.robustness.perturbations:
        if name == "paraphrase":
            for k, paraphrase in enumerate(spec.paraphrases):
                inline = "{" in paraphrase
                variant_builder = PromptBuilder(spec, builder.fewshot, prompt_registry,
                                                user_template=paraphrase if inline else None,
                                                template_ref=None if inline else paraphrase)
                prefix = f"{spec.name}~paraphrase{k}"
                plans.append(TaskPlan(spec, rows, _requests(spec, rows, variant_builder, prefix), "paraphrase"))
            continue
        values = [robustness.perturb_values(v, name, cfg.robustness, cfg.seed) for v in clean_values]
        prefix = f"{spec.name}~{name}"
        plans.append(TaskPlan(spec, rows, _requests(spec, rows, builder, prefix, values), name))
    return plans


def score_plans(plans: list[TaskPlan], responses: dict[str, EvalResponse], cfg: EvalConfig) -> dict[str, TaskResult]:
    """Score every plan; robustness variants are folded into their clean task's metrics."""
    results: dict[str, TaskResult] = {}
    variants: dict[str, dict[str, list[TaskResult]]] = {}
    for plan in plans:
        result = plan.score(responses)
        if plan.variant:
            variants.setdefault(plan.spec.name, {}).setdefault(plan.variant, []).append(result)
        else:
            results[plan.spec.name] = result
    for name, by_variant in variants.items():
        spec = next(p.spec for p in plans if p.spec.name == name)
        robustness.merge(results[name], by_variant, generation.primary_metric(spec), cfg.robustness)
    return results


def all_requests(plans: list[TaskPlan]) -> list[EvalRequest]:
    requests = [r for plan in plans for r in plan.requests]
    assert len({r.id for r in requests}) == len(requests), "request ids must be unique within a run"
    return requests
