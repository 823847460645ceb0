"""Evaluation on real engines: the offline target (vLLM actors in a Ray Data pool) and the rayloom
endpoint (Ray Serve + vLLM, API key, official openai client) give the same scores on the same model
with greedy decoding; perplexity matches a direct transformers computation; the LLM judge scores
through the endpoint; the deploy gate blocks the evaluated (random, failing) model, in `rayloom serve`
too.

One offline run and one deployment are shared by the module (a deploy costs over a minute on 2 cores).
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from rayloom.ports import free_port

pytestmark = pytest.mark.integration

KEY = "eval-test-key-4d1e"
KEY_ENV = "RAYLOOM_EVAL_TEST_KEY"
TASKS = ["demo_arith", "demo_arith_mc", "python_mc", "python_qa", "heldout_text", "bias_likelihood",
         "safety_refusal"]


@pytest.fixture(scope="module")
def eval_cfg(tmp_path_factory):
    from rayloom.config import compose

    root = tmp_path_factory.mktemp("eval-targets")
    return compose("eval", ["model=tiny-2l", f"storage.root={root}", f"eval.tasks=[{','.join(TASKS)}]",
                            "eval.max_examples=10", "eval.max_model_len=512", "eval.batch_size=32"])


@pytest.fixture(scope="module")
def offline_run(ray_local, eval_cfg):
    from rayloom.eval import evaluate

    return evaluate(eval_cfg)


@pytest.fixture(scope="module")
def endpoint(ray_local, tmp_path_factory, tiny_model_dir):
    from ray import serve

    from rayloom.config import compose
    from rayloom.serve import deploy

    key_file = tmp_path_factory.mktemp("eval-keys") / "keys"
    key_file.write_text(f"{KEY}\n")
    cfg = compose("serve", ["model=tiny-2l", f"serve.model_path={tiny_model_dir}", f"serve.port={free_port()}",
                            "serve.app_name=eval-test", f"serve.api_key_file={key_file}",
                            "serve.api_key_env=RAYLOOM_EVAL_TEST_UNSET", "serve.max_model_len=512",
                            "serve.max_prompt_tokens=500", "serve.engine_num_cpus=0.5", "serve.replica_num_cpus=0.5",
                            "serve.ingress_num_cpus=0.5"])
    try:
        yield deploy(cfg)
    finally:
        serve.delete(cfg.serve.app_name)
        serve.shutdown()


def _endpoint_cfg(eval_cfg, endpoint, tiny_model_dir, **changes):
    ecfg = dataclasses.replace(eval_cfg.eval, target="endpoint", endpoint_url=endpoint.base_url, api_key_env=KEY_ENV,
                               endpoint_model=endpoint.model_id, tokenizer=str(tiny_model_dir), **changes)
    return dataclasses.replace(eval_cfg, eval=ecfg)


def test_offline_and_endpoint_targets_give_the_same_scores(offline_run, endpoint, eval_cfg, tiny_model_dir,
                                                           monkeypatch):
    from rayloom.eval import evaluate

    monkeypatch.setenv(KEY_ENV, KEY)
    online = evaluate(_endpoint_cfg(eval_cfg, endpoint, tiny_model_dir), record=False)
    assert online.payload["target"]["kind"] == "endpoint"
    assert offline_run.payload["target"]["kind"] == "checkpoint"
    for task in TASKS:
        off, on = offline_run.results[task], online.results[task]
        assert off.num_errors == on.num_errors == 0, (task, off.predictions[:1], on.predictions[:1])
        for name, value in off.metrics.items():
            assert on.metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-3), (task, name)
    # Greedy generation: the same text, answer by answer (chat through /v1/chat/completions).
    for task in ("demo_arith", "python_qa", "safety_refusal"):
        assert [p["response"] for p in online.results[task].predictions] == [
            p["response"] for p in offline_run.results[task].predictions]
    # Log-likelihoods (text prompts and chat-rendered prompts): the same numbers.
    for task in ("python_mc", "demo_arith_mc"):
        for off, on in zip(offline_run.results[task].predictions, online.results[task].predictions, strict=True):
            assert on["logprobs"] == pytest.approx(off["logprobs"], abs=2e-3)
    # The random model actually produced text and distinct choice scores (the comparison is not vacuous).
    assert any(p["response"].strip() for p in offline_run.results["demo_arith"].predictions)
    assert len({round(x, 3) for x in offline_run.results["python_mc"].predictions[0]["logprobs"]}) > 1


def test_two_replicas_give_the_same_scores(offline_run, eval_cfg):
    from rayloom.eval import evaluate

    # Small batches so both actors of the pool get work.
    cfg = dataclasses.replace(eval_cfg, eval=dataclasses.replace(eval_cfg.eval, num_replicas=2, batch_size=8))
    scaled = evaluate(cfg, record=False)
    assert scaled.payload["config"]["num_replicas"] == 2
    for task in TASKS:
        for name, value in offline_run.results[task].metrics.items():
            assert scaled.results[task].metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, name)


def test_perplexity_matches_a_direct_transformers_computation(offline_run, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayloom.eval.tasks import load_examples, load_task_registry

    spec = load_task_registry().get("heldout_text")
    texts = [row["text"] for row in load_examples(spec, 10)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text, record in zip(texts, offline_run.results["heldout_text"].predictions, strict=True):
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            assert ids[0, 0].item() == tokenizer.bos_token_id
            # Mean NLL over every token after BOS, times their count.
            nll = model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            assert record["num_tokens"] == ids.shape[1] - 1
            assert record["nll"] == pytest.approx(nll, rel=1e-4)
            total_nll += nll
            total_tokens += ids.shape[1] - 1
    expected = math.exp(total_nll / total_tokens)
    assert offline_run.results["heldout_text"].metrics["perplexity"] == pytest.approx(expected, rel=1e-4)
    # An untrained model over a ~500-token vocabulary sits near uniform.
    assert 100 < expected < 2000


def test_llm_judge_through_the_endpoint(offline_run, endpoint, monkeypatch):
    from rayloom.config.eval import JudgeConfig
    from rayloom.eval.judge import judge_results

    monkeypatch.setenv(KEY_ENV, KEY)
    results = {"demo_arith": offline_run.results["demo_arith"]}
    judge = JudgeConfig(enabled=True, endpoint_url=endpoint.base_url, api_key_env=KEY_ENV, max_examples=4,
                        guided_choice=True)
    summary = judge_results(results, judge)
    assert summary["demo_arith"] == {"judged": 4, "parsed": 4, "judge_model": endpoint.model_id}
    scores = [p["judge_score"] for p in results["demo_arith"].predictions[:4]]
    assert all(1 <= s <= 5 for s in scores)
    assert results["demo_arith"].metrics["judge_score"] == pytest.approx(sum(scores) / 4)
    assert results["demo_arith"].metrics["judge_unparsed"] == 0.0


def test_endpoint_errors_are_clear(endpoint, eval_cfg, tiny_model_dir, monkeypatch):
    from rayloom.errors import UserError
    from rayloom.eval.endpoint_target import EndpointTarget

    monkeypatch.setenv(KEY_ENV, "wrong-key")
    with pytest.raises(UserError, match="refused the API key"):
        EndpointTarget(_endpoint_cfg(eval_cfg, endpoint, tiny_model_dir).eval)
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(UserError, match="does not serve model 'nope'"):
        EndpointTarget(dataclasses.replace(_endpoint_cfg(eval_cfg, endpoint, tiny_model_dir).eval,
                                           endpoint_model="nope"))


def test_the_gate_blocks_the_failing_model_and_serve_refuses_it(offline_run, eval_cfg, tiny_model_dir):
    from rayloom.config import compose
    from rayloom.eval import GateFailed, check_gate, store
    from rayloom.serve import run_serve_job

    root = store.eval_root(eval_cfg.storage)
    # The offline run recorded itself as the latest evaluation of the tiny model.
    failing = check_gate(tiny_model_dir, {"min": {"demo_arith/exact_match": 0.5}}, eval_root=root)
    assert not failing.passed and failing.run == offline_run.uri
    assert "demo_arith/exact_match = 0 (needs >= 0.5)" in failing.message
    assert check_gate(tiny_model_dir, {"max": {"heldout_text/perplexity": 1e6}}, eval_root=root).passed
    cfg = compose("serve", ["model=tiny-2l", f"storage.root={eval_cfg.storage.root}", "serve.enforce_gate=true",
                            "serve.require_api_key=false", "+eval.gate.min={demo_arith/exact_match:0.5}",
                            "+eval.gate.max={heldout_text/perplexity:1e6}"])
    with pytest.raises(GateFailed, match=r"demo_arith/exact_match = 0 \(needs >= 0.5\)") as refused:
        run_serve_job(cfg)
    assert "heldout_text/perplexity" not in str(refused.value)  # only failing metrics are listed
