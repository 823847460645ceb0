"""Multiple-choice tasks scored by log-likelihood: each choice's continuation is scored after the prompt.

acc picks the most likely choice, acc_norm the most likely per byte; the softmax over the choices
gives a confidence, from which the expected calibration error and a reliability diagram come.
"""

from __future__ import annotations

from rayloom.eval import metrics as M
from rayloom.eval.prompt_builder import PromptBuilder, answer_index
from rayloom.eval.requests import LOGLIKELIHOOD, EvalRequest, EvalResponse
from rayloom.eval.results import TaskResult
from rayloom.eval.tasks import TaskSpec


def build_requests(spec: TaskSpec, rows: list[dict], builder: PromptBuilder, prefix: str,
                   values: list[dict] | None = None) -> list[EvalRequest]:
    values = values or [builder.values(row) for row in rows]
    requests = []
    for i, (row, v) in enumerate(zip(rows, values, strict=True)):
        answer_index(row, spec)  # validates choices/answer before any engine time is spent
        context = builder.render(v)
        for j, choice in enumerate(row[spec.choices]):
            requests.append(EvalRequest(id=f"{prefix}#{i}#c{j}", kind=LOGLIKELIHOOD,
                                        continuation=spec.choice_prefix + str(choice), **context))
    return requests


def score(spec: TaskSpec, rows: list[dict], requests: list[EvalRequest],
          responses: dict[str, EvalResponse]) -> TaskResult:
    by_id = {r.id: r for r in requests}
    prefix = requests[0].id.split("#", 1)[0] if requests else spec.name
    accs, norms, confidences, predictions, errors = [], [], [], [], 0
    for i, row in enumerate(rows):
        choices = [str(c) for c in row[spec.choices]]
        answers = [responses[f"{prefix}#{i}#c{j}"] for j in range(len(choices))]
        failed = [a.error for a in answers if a.error]
        answer = answer_index(row, spec)
        if failed:
            errors += 1
            scores = {"acc": 0.0, "acc_norm": 0.0, "confidence": 0.0, "prob_correct": 0.0}
        else:
            scores = M.multiple_choice([a.logprob for a in answers], choices, answer)
        accs.append(scores["acc"])
        norms.append(scores["acc_norm"])
        confidences.append(scores["confidence"])
        request = by_id[f"{prefix}#{i}#c0"]
        predictions.append({"id": f"{prefix}#{i}", "prompt": request.prompt or request.messages[-1]["content"],
                            "choices": choices, "answer": answer,
                            "logprobs": [a.logprob for a in answers], "acc": scores["acc"],
                            "confidence": scores["confidence"], **({"error": failed[0]} if failed else {})})
    calib = M.calibration(confidences, accs)
    values = {"acc": M.mean(accs), "acc_norm": M.mean(norms), "ece": calib["ece"],
              "error_rate": errors / max(1, len(rows))}
    stderr = {"acc": M.stderr(accs), "acc_norm": M.stderr(norms)}
    return TaskResult(spec.name, spec.kind, len(rows), values, stderr, errors, predictions,
                      {"calibration": calib["bins"]}, description=spec.description)
