"""API keys and the ASGI guard (auth + body limit), run in front of a real Starlette app over HTTP
(Starlette's TestClient drives the ASGI app through httpx)."""

from __future__ import annotations

import pickle

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from rayloom.errors import UserError
from rayloom.serve.auth import AuthSettings, bearer_token, key_digest, read_api_keys, resolve_auth
from rayloom.serve.guard import RequestGuard


def test_keys_come_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_TEST_KEYS", " k1 , k2 ")
    key_file = tmp_path / "keys"
    key_file.write_text("# comment\n\nk3\n  k4  \n")
    assert read_api_keys("RL_TEST_KEYS", str(key_file)) == ["k1", "k2", "k3", "k4"]
    assert read_api_keys("RL_TEST_UNSET", "") == []
    assert read_api_keys("", str(tmp_path / "missing")) == []


def test_resolve_auth_needs_a_key_and_keeps_only_digests(tmp_path, monkeypatch):
    monkeypatch.delenv("RL_TEST_KEYS", raising=False)
    with pytest.raises(UserError, match="no API key was found.*RL_TEST_KEYS"):
        resolve_auth(True, "RL_TEST_KEYS", "")
    with pytest.raises(UserError, match="does not exist"):
        resolve_auth(True, "RL_TEST_KEYS", str(tmp_path / "nope"))
    open_endpoint = resolve_auth(False, "RL_TEST_KEYS", "")
    assert not open_endpoint.require_api_key and open_endpoint.verifier().allows(None)
    monkeypatch.setenv("RL_TEST_KEYS", "super-secret-key")
    auth = resolve_auth(True, "RL_TEST_KEYS", "")
    assert auth.key_digests == (key_digest("super-secret-key"),)
    assert b"super-secret-key" not in pickle.dumps(auth)  # what travels to replicas holds no key
    assert "super-secret-key" not in repr(auth)


def test_verifier_reads_the_node_env_and_checks_bearer_tokens(monkeypatch):
    auth = AuthSettings(api_key_env="RL_TEST_NODE_KEY", key_digests=(key_digest("from-driver"),))
    monkeypatch.setenv("RL_TEST_NODE_KEY", "from-node")
    verifier = auth.verifier()
    assert verifier.allows("Bearer from-driver") and verifier.allows("bearer   from-node")
    for header in (None, "", "Bearer", "Bearer wrong", "from-driver", "Basic from-driver", "Bearerfrom-driver"):
        assert not verifier.allows(header), header
    assert bearer_token("Bearer abc") == "abc" and bearer_token("Token abc") == ""


def test_verifier_without_keys_refuses_to_start():
    with pytest.raises(RuntimeError, match="no API key"):
        AuthSettings(api_key_env="RL_TEST_UNSET").verifier().check_ready()


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body), "head": body[:20].decode(errors="replace")})


@pytest.fixture
def guarded():
    app = Starlette(routes=[Route("/v1/echo", _echo, methods=["GET", "POST"])])
    auth = AuthSettings(api_key_env="RL_TEST_UNSET", key_digests=(key_digest("good"),))
    return TestClient(RequestGuard(app, auth=auth, max_body_bytes=1000))


def test_guard_requires_a_valid_key_on_every_path(guarded):
    for path in ("/v1/echo", "/anything/else", "/docs"):
        for headers in ({}, {"Authorization": "Bearer bad"}, {"Authorization": "good"}):
            response = guarded.get(path, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
    assert guarded.get("/v1/echo", headers={"Authorization": "Bearer good"}).status_code == 200
    assert guarded.get("/anything/else", headers={"Authorization": "Bearer good"}).status_code == 404


def test_guard_passes_the_body_through_unchanged(guarded):
    response = guarded.post("/v1/echo", content=b"x" * 1000, headers={"Authorization": "Bearer good"})
    assert response.status_code == 200 and response.json() == {"bytes": 1000, "head": "x" * 20}


def test_guard_rejects_oversized_bodies_declared_or_streamed(guarded):
    headers = {"Authorization": "Bearer good"}
    declared = guarded.post("/v1/echo", content=b"x" * 1001, headers=headers)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the guard counts while reading
        for _ in range(5):
            yield b"y" * 300

    streamed = guarded.post("/v1/echo", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    # Auth comes first: a huge body without a key is a 401, and nothing is read.
    assert guarded.post("/v1/echo", content=b"x" * 5000).status_code == 401


def test_guard_lets_cors_preflight_through(guarded):
    response = guarded.options("/v1/echo")
    assert response.status_code != 401


def test_post_bodies_are_json_whatever_the_client_labels_them():
    """An unlabelled body is read as JSON; another media type is a 415, never a 500 from the app."""
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"content_type": request.headers.get("content-type"), "body": await request.json()})

    app = RequestGuard(Starlette(routes=[Route("/echo", echo, methods=["POST"])]),
                       auth=AuthSettings(require_api_key=False, api_key_env="", api_key_file=""), max_body_bytes=1000)
    client = TestClient(app)
    unlabelled = client.post("/echo", content=b'{"a": 1}')
    assert unlabelled.status_code == 200 and unlabelled.json() == {"content_type": "application/json", "body": {"a": 1}}
    assert client.post("/echo", json={"a": 2}).json()["body"] == {"a": 2}
    wrong = client.post("/echo", content=b'{"a": 1}', headers={"content-type": "text/plain"})
    assert wrong.status_code == 415 and wrong.json()["error"]["code"] == "unsupported_media_type"
