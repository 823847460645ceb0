"""Secrets never travel by value (issue #17 item 5, security review finding 6).

A unique secret is planted in the submitting shell's environment, in overrides, in cluster.env
and in serve.engine_kwargs; the real rendering paths run (the `rayloom submit` job spec, `rayloom
cluster render kuberay`, the Serve config writers) and every file, the job metadata, the
entrypoint and the captured logs are searched for it: each path refuses (naming the key, never the
value) or leaves the secret out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import string
import typing

import pytest
from helpers import REPO_ROOT

from rayloom import secret_policy
from rayloom.cluster import cluster_main, submit_main
from rayloom.cluster.job_spec import build_job_spec
from rayloom.cluster.submit import prepare_job
from rayloom.config import JOBS, ClusterConfig, RayloomConfig, compose
from rayloom.errors import UserError
from rayloom.runtime import build_env_vars
from rayloom.secret_policy import (
    check_config,
    check_overrides,
    looks_like_secret_name,
    redact_text,
    redact_uri,
    secret_value_kind,
)


def _planted() -> str:
    """A fresh random key: mixed case and digits, 40 characters (what generated API keys look like)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(40))
        if secret_value_kind(value):
            return value


SECRET = _planted()
HF_SECRET = "hf_" + SECRET[:34]


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD",
                                  "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "MY_API_KEY",
                                  "DB_PASSWD", "hf_token", "hfToken", "openai_apikey", "SERVICE_CREDENTIALS",
                                  "PROXY_AUTH", "GITHUB_TOKEN"])
def test_credential_names_are_recognised(name):
    assert looks_like_secret_name(name)


@pytest.mark.parametrize("name", ["AWS_ENDPOINT_URL", "AWS_REGION", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                                  "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "api_key_env",
                                  "TOKENIZERS_PARALLELISM", "max_num_batched_tokens", "VLLM_CPU_KVCACHE_SPACE",
                                  "MONKEY_PATCH", "HF_HUB_OFFLINE"])
def test_reference_and_ordinary_names_pass(name):
    assert not looks_like_secret_name(name)


def test_a_configured_variable_name_is_a_secret_whatever_it_is_called():
    assert looks_like_secret_name("SERVING_PASS_PHRASE_X", {"SERVING_PASS_PHRASE_X"})
    assert looks_like_secret_name("ENDPOINT_GATE", {"ENDPOINT_GATE"})


@pytest.mark.parametrize("value,kind", [
    ("https://alice:pw123@mlflow.example.com", "password"),
    ("postgresql://u:p@db:5432/mlflow", "password"),
    ("Bearer abcdefghijk123", "bearer"),
    ("AKIAIOSFODNN7EXAMPLE", "AWS"),
    ("hf_abcdefghijklmnopqrstuvwxyz0123", "Hugging Face"),
    ("ghp_" + "a1B2" * 9, "GitHub"),
    ("sk-proj-abcdefghijklmnopqrstuvwx", "API key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
    ("[a, " + SECRET + "]", "random"),
])
def test_credential_values_are_recognised(value, kind):
    assert kind in secret_value_kind(value)


@pytest.mark.parametrize("value", [
    "s3://bucket/models/Meta-Llama-3.1-8B-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "Qwen2_5_Coder_32B_Instruct_GPTQ_Int4_Final_Build", "0123456789abcdef0123456789abcdef01234567",
    "123e4567-e89b-12d3-a456-426614174000", "http://127.0.0.1:8265", "/home/me/.ray/auth_token",
    "runs/tiny_lora_sft_2026-12-06_06-30-00", "https://user@host/path", "You are a helpful assistant.",
])
def test_ordinary_values_pass(value):
    assert secret_value_kind(value) == ""


def test_redact_uri_strips_userinfo_and_secret_query_parameters():
    assert redact_uri("https://alice:pw123@mlflow.example.com:5000/x?token=abc&page=2") == \
        "https://***@mlflow.example.com:5000/x?token=***&page=2"
    assert redact_uri("sqlite:////tmp/runs/mlflow.db") == "sqlite:////tmp/runs/mlflow.db"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert "pw123" not in redact_text("connecting to postgresql://u:pw123@db/mlflow with " + HF_SECRET)
    assert SECRET[:34] not in redact_text("key " + HF_SECRET)


def _fields(schema: type, prefix: str = "") -> typing.Iterator[tuple[str, type]]:
    for f in dataclasses.fields(schema):
        hint = typing.get_type_hints(schema)[f.name]
        yield f"{prefix}{f.name}", hint
        args = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        for arg in args:
            yield from _fields(arg, f"{prefix}{f.name}.")


def test_no_schema_field_holds_a_secret_by_value():
    """check_config checks schema fields by value only: this review keeps that sound. A field whose
    name looks like a credential must name where the secret is (a variable, a file), or be a flag."""
    # text_key: a column name; human_review.key: the export folder; require_api_key: a flag.
    reviewed = {"data.text_key", "data.sources.text_key", "eval.human_review.key", "serve.require_api_key"}
    suspicious = {path for path, _hint in _fields(RayloomConfig)
                  if looks_like_secret_name(path.rsplit(".", 1)[-1])}
    assert suspicious <= reviewed, f"new credential-like schema fields: {sorted(suspicious - reviewed)}"


def test_every_shipped_config_passes_the_policy():
    """No false positives on what the project ships: every job, and every experiment."""
    from rayloom.config import conf_dir

    for job in JOBS:
        check_config(compose(job, []), job)
    for experiment in sorted((conf_dir() / "experiment").glob("*.yaml")):
        check_config(compose("train", [f"experiment={experiment.stem}"]), experiment.stem)


@pytest.mark.parametrize("overrides,named", [
    ([f"+cluster.env.WANDB_API_KEY={SECRET}"], "WANDB_API_KEY"),
    ([f"+cluster.env.INNOCENT_LOOKING={HF_SECRET}"], "INNOCENT_LOOKING"),
    (["serve.api_key_env=SERVING_GATE", f"+cluster.env.SERVING_GATE={SECRET}"], "SERVING_GATE"),
    ([f"+serve.engine_kwargs.hf_token={SECRET}"], "hf_token"),
    ([f"+serve.engine_kwargs.revision={SECRET}"], "revision"),
    ([f"tracking.mlflow_uri=https://alice:{SECRET}@mlflow.example.com"], "mlflow_uri"),
])
def test_submit_and_kuberay_refuse_a_planted_secret(overrides, named, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UserError, match=named) as submitted:
        submit_main(["train", *overrides, "--address", "http://127.0.0.1:1"])
    out = tmp_path / "kuberay"
    with pytest.raises(UserError, match=named) as rendered:
        cluster_main(["render", "kuberay", "model=hf", "model.path=s3://bucket/model", *overrides, "-o", str(out)])
    for error in (submitted.value, rendered.value):
        assert "by reference" in str(error) and SECRET not in str(error)
    assert not out.exists() or not any(out.iterdir())
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text


def test_the_override_check_names_configured_secrets_inside_mapping_values():
    with pytest.raises(UserError, match="SERVING_GATE"):
        check_overrides(["cluster.env={SERVING_GATE: abc}"], secret_names={"SERVING_GATE"})


@pytest.fixture
def secret_shell(monkeypatch):
    """The submitting shell holds secrets, as a developer's shell does."""
    for name in ("WANDB_API_KEY", "HF_TOKEN", "MY_SERVICE_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:{SECRET}@127.0.0.1:9000")


def test_a_clean_submission_carries_no_secret_from_the_shell(secret_shell, caplog):
    caplog.set_level(logging.DEBUG)
    _cfg, spec = prepare_job("train", ["model=tiny-2l", "+cluster.env.MY_FLAG=1", "cluster.secret_env=[HF_TOKEN]"])
    sent = json.dumps(spec.runtime_env) + spec.entrypoint + json.dumps(spec.metadata)
    assert SECRET not in sent and SECRET not in caplog.text
    assert spec.runtime_env["env_vars"]["MY_FLAG"] == "1"
    assert "AWS_ENDPOINT_URL" not in spec.runtime_env["env_vars"]  # held credentials: not forwarded
    assert "not forwarding AWS_ENDPOINT_URL" in caplog.text
    assert "job_env HF_TOKEN" in spec.entrypoint  # by reference: the cluster must provide it


def test_a_clean_kuberay_render_carries_no_secret(secret_shell, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "kuberay"
    assert cluster_main(["render", "kuberay", "model=hf", "model.path=s3://bucket/model", "+cluster.env.MY_FLAG=1",
                         "-o", str(out)]) == 0
    files = sorted(out.iterdir())
    assert files
    captured = capsys.readouterr()
    for text in [p.read_text() for p in files] + [captured.out, captured.err, caplog.text]:
        assert SECRET not in text


def test_review_examples():
    """The security review's two proposed tests, against the real functions."""
    with pytest.raises(UserError, match="mlflow_uri") as refused:
        build_job_spec("train", ["tracking.mlflow_uri=https://u:p4ss@h", "+cluster.env.WANDB_API_KEY=x"],
                       ClusterConfig(), REPO_ROOT)
    assert "p4ss" not in str(refused.value)
    with pytest.raises(UserError, match="WANDB_API_KEY"):
        build_job_spec("train", ["+cluster.env.WANDB_API_KEY=x"], ClusterConfig(), REPO_ROOT)
    cfg = compose("serve", ["serve.api_key_env=MY_GATE", "+cluster.env.MY_GATE=s3cr3t"])
    with pytest.raises(UserError, match="MY_GATE"):
        check_config(cfg)
    with pytest.raises(UserError, match="MY_GATE"):
        build_env_vars(cfg.cluster, secret_policy.configured_secret_names(cfg))


def test_the_local_serve_config_writer_refuses_cluster_env_secrets(tmp_path):
    from rayloom.serve.serve_config import write_serve_config

    cfg = compose("serve", [f"+cluster.env.WANDB_API_KEY={SECRET}"])
    with pytest.raises(UserError, match="WANDB_API_KEY"):
        write_serve_config(cfg, tmp_path / "serve_config.yaml")
    assert not (tmp_path / "serve_config.yaml").exists()


def test_the_local_serve_config_writer_refuses_engine_kwargs_secrets(tmp_path):
    from rayloom.serve.serve_config import write_serve_config

    cfg = compose("serve", [f"+serve.engine_kwargs.hf_token={SECRET}"])
    with pytest.raises(UserError, match="hf_token"):
        write_serve_config(cfg, tmp_path / "serve_config.yaml")


def test_eval_runs_store_endpoint_urls_without_credentials():
    """An endpoint URL with credentials (user:pw@, ?api_key=) is redacted in lm-eval's recorded
    model_args, which rayloom stores in the run (lm_eval/results.json)."""
    from rayloom.eval.harness import _redact_model_args

    output = {"config": {"model_args": {"base_url": "https://bob:hunter2@llm.example/v1/completions?api_key=sk-1",
                                        "model": "tiny", "num_concurrent": 4}}}
    _redact_model_args(output)
    args = output["config"]["model_args"]
    assert "hunter2" not in str(args) and "sk-1" not in str(args)
    assert args["base_url"] == "https://***@llm.example/v1/completions?api_key=***" and args["num_concurrent"] == 4
    text = {"config": {"model_args": "base_url=https://bob:hunter2@llm.example/v1,model=tiny"}}
    _redact_model_args(text)
    assert "hunter2" not in text["config"]["model_args"]
