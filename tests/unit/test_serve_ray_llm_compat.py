"""The private Ray Serve LLM surface rayloom relies on still exists (no Ray cluster is started).

rayloom.serve._ray_llm_compat is the only module that imports `ray.llm._internal`; this test
imports it and checks every private method and attribute its PRIVATE_SURFACE lists, with the
parameter names rayloom calls them with. A Ray upgrade that moves or renames one fails here, in one
place, instead of deep inside a replica during a slow integration test.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from rayloom.serve import _ray_llm_compat as compat  # an ImportError here is the loud failure

SERVE_DIR = REPO_ROOT / "platform" / "rayloom" / "serve"


def _assigned_attributes(cls: type) -> set[str]:
    """`self.<name> = ...` targets anywhere in the source of `cls` and its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source.lstrip() if source[0].isspace() else source)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            names |= {t.attr for t in targets
                      if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    return names


@pytest.mark.parametrize("entry", compat.PRIVATE_SURFACE, ids=lambda e: f"{e[0].__name__}.{e[1]}")
def test_private_method_or_attribute_exists(entry):
    cls, name, kind, params, why = entry
    if kind == "attribute":
        assert name in _assigned_attributes(cls), f"{cls.__name__} no longer sets self.{name} ({why})"
        return
    method = getattr(cls, name, None)
    assert callable(method), f"{cls.__name__}.{name} is gone ({why})"
    if params is not None:
        # rayloom passes these by name (or overrides with them): each must still exist.
        actual = tuple(inspect.signature(method).parameters)
        missing = [p for p in params if p not in actual]
        assert not missing, f"{cls.__name__}.{name}{actual} lacks {missing} ({why})"


def test_the_private_imports_are_what_rayloom_uses():
    # Routes bound to RayloomIngress's overrides (model_data answers through `model`).
    assert set(compat.DEFAULT_ENDPOINTS) >= {"chat", "completions", "models", "model_data"}
    assert callable(compat.init_ingress_app) and not inspect.signature(compat.init_ingress_app).parameters
    assert hasattr(compat.RawRequestInfo, "from_starlette_request")
    assert tuple(inspect.signature(compat.to_model_metadata).parameters)[:3] == ("model_id", "model_config",
                                                                                   "overrides")
    assert tuple(inspect.signature(compat.Batcher).parameters)[:2] == ("generator", "interval_ms")
    assert callable(compat.global_id_manager.next)
    assert compat.get_lora_id("base:adapter") == "adapter" and compat.get_base_model_id("base:adapter") == "base"
    assert {"model_id", "max_total_tokens", "local_path", "lora_assigned_int_id"} <= set(
        compat.DiskMultiplexConfig.model_fields)
    for model in (compat.ChatCompletionRequest, compat.CompletionRequest, compat.CompletionResponse,
                  compat.ErrorResponse, compat.ModelCard, compat.ModelList):
        assert hasattr(model, "model_fields"), model
    from ray.serve.context import _get_global_client  # what serve_http_address reads

    assert callable(_get_global_client)


def test_no_other_module_imports_ray_internals():
    offenders = []
    for path in SERVE_DIR.parent.rglob("*.py"):
        if path.name == "_ray_llm_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
            if any(n.startswith("ray.llm._internal") or n.startswith("ray.serve.context") for n in names):
                offenders.append(str(Path(path).relative_to(REPO_ROOT)))
    assert offenders == []
