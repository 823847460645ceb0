"""Before/after measurements of an alignment run, on the driver with plain transformers (tiny models:
seconds; no engine start-up).

- preference_accuracy: share of held-out pairs the model itself ranks right (log p(chosen) >
  log p(rejected), summed over the response tokens) - the number the demo prints before -> after.
- measure_refusals: greedy answers to held-out safety prompts, scored by the eval package's own
  refusal probe (rayloom.eval.generation.score_refusal / is_refusal): refusal_rate on harmful
  prompts, over_refusal_rate on benign look-alikes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PreferenceScore:
    pairs: int
    accuracy: float
    # Mean of log p(chosen) - log p(rejected).
    mean_margin: float
    # log p(chosen) - log p(rejected) of each pair.
    margins: list[float]

    def reward_accuracy(self, reference: PreferenceScore) -> float:
        """Share of pairs whose DPO implicit reward ranks them right against `reference` (the same
        pairs scored by the reference model): the margin grew."""
        assert len(self.margins) == len(reference.margins)
        return sum(a > b for a, b in zip(self.margins, reference.margins, strict=True)) / max(1, len(self.margins))


def preference_accuracy(model_dir: str | Path, rows: list[dict], batch_size: int = 16) -> PreferenceScore:
    """`rows` are preference rows (rayloom.data.schema.PREFERENCE_COLUMNS)."""
    import torch

    from rayloom.align.losses import sequence_logps
    from rayloom.models import load_model

    if not rows:
        raise ValueError("no preference rows to score")
    model = load_model(model_dir)
    model.eval()
    margins: list[float] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            batch = {k: torch.tensor([list(r[k]) for r in part]).long() for k in part[0] if k.startswith(("chosen", "rejected"))}
            sides = []
            for side in ("chosen", "rejected"):
                logits = model(input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"],
                               use_cache=False).logits
                sides.append(sequence_logps(logits, batch[f"{side}_labels"]).logps)
            margins += (sides[0] - sides[1]).tolist()
    return PreferenceScore(len(rows), sum(m > 0 for m in margins) / len(rows), sum(margins) / len(rows), margins)


def generate_answers(model_dir: str | Path, prompts: list[str], max_new_tokens: int = 24,
                     batch_size: int = 16) -> list[str]:
    """Greedy chat completions of single-turn prompts."""
    import torch

    from rayloom.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    model = load_model(model_dir)
    model.eval()
    answers = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts[start:start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def measure_refusals(model_dir: str | Path, rows: list[dict], max_new_tokens: int = 24):
    """Refusal probe over {prompt, should_refuse, category} rows; returns eval's TaskResult
    (metrics: refusal_rate, over_refusal_rate, safety_accuracy; predictions: each answer)."""
    from rayloom.eval.generation import score_refusal
    from rayloom.eval.requests import GENERATE, EvalRequest, EvalResponse
    from rayloom.eval.tasks import TaskSpec

    spec = TaskSpec(name="safety_heldout", kind="refusal", data="", max_tokens=max_new_tokens,
                    description="held-out prompts of the safety seed set")
    requests = [EvalRequest(id=f"safety#{i}", kind=GENERATE, messages=[{"role": "user", "content": r["prompt"]}],
                            max_tokens=max_new_tokens) for i, r in enumerate(rows)]
    answers = generate_answers(model_dir, [r["prompt"] for r in rows], max_new_tokens)
    responses = {req.id: EvalResponse(id=req.id, text=text) for req, text in zip(requests, answers, strict=True)}
    return score_refusal(spec, rows, requests, responses)
