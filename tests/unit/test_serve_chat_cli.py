"""`rayloom chat` and `rayloom serve` argument handling that needs no running endpoint."""

from __future__ import annotations

import pytest

from rayloom.cli import main
from rayloom.errors import UserError
from rayloom.openai_client import api_base
from rayloom.ports import free_port
from rayloom.prompts import load_registry
from rayloom.serve.chat import build_parser, chat_main, load_chat_template
from rayloom.serve.deploy import endpoint_url


def test_chat_cli_help_and_defaults(capsys, monkeypatch):
    monkeypatch.setenv("RAYLOOM_ENDPOINT", "http://example:9/v1")
    args = build_parser().parse_args([])
    assert args.url == "http://example:9/v1" and args.api_key_env == "RAYLOOM_API_KEY" and not args.message
    with pytest.raises(SystemExit) as info:
        chat_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--template" in out and "--api-key-env" in out


def test_chat_cli_reports_an_unreachable_endpoint(capsys):
    rc = chat_main(["--url", f"http://127.0.0.1:{free_port()}", "-m", "hi", "--model", "m"])
    assert rc == 1
    assert "cannot reach" in capsys.readouterr().err


def test_chat_cli_template_must_take_one_variable(tmp_path):
    (tmp_path / "two.yaml").write_text("name: two\nuser: '{a} and {b}'\n")
    with pytest.raises(UserError, match="one variable per input"):
        load_chat_template("two", load_registry(tmp_path))
    template, shots = load_chat_template("demo_arith@2")
    assert template.name == "demo_arith" and shots == 2
    with pytest.raises(UserError, match="unknown prompt template"):
        chat_main(["--url", "http://127.0.0.1:9", "--template", "nope", "-m", "x"])


def test_urls():
    assert api_base("http://h:1") == "http://h:1/v1" and api_base("http://h:1/v1/") == "http://h:1/v1"
    with pytest.raises(UserError):
        api_base("h:1")
    from rayloom.config import compose

    serve = compose("serve", ["serve=gpu", "serve.port=9000", "serve.route_prefix=/llm"]).serve
    assert endpoint_url(serve) == "http://127.0.0.1:9000/llm/v1"


def test_serve_refuses_to_detach_from_an_embedded_ray(monkeypatch, capsys):
    monkeypatch.setenv("RAYLOOM_API_KEY", "k")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", "serve.blocking=false"]) == 2
    assert "serve.blocking=false needs a Ray cluster" in capsys.readouterr().err


def test_serve_without_a_key_is_a_user_error(monkeypatch, capsys):
    monkeypatch.delenv("RAYLOOM_API_KEY", raising=False)
    assert main(["serve"]) == 2
    assert "no API key was found" in capsys.readouterr().err
