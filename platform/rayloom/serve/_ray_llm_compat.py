"""Every private piece of Ray Serve LLM (and Ray Serve) that rayloom relies on, in one place.

rayloom builds on Ray Serve LLM's public builders (`build_llm_deployment`, `make_fastapi_ingress`,
`LLMConfig`, `OpenAiIngress`, `LLMServer`), but a few things it needs are only reachable through
`ray.llm._internal` or by overriding private methods. They are imported here and nowhere else,
and `PRIVATE_SURFACE` lists every private method and attribute the subclasses in this package
override, call or read, so `tests/unit/test_serve_ray_llm_compat.py` fails in one place, without
starting Ray, when a Ray upgrade moves or renames one of them. Each entry says which public API
would make it unnecessary. Checked against ray 2.60.0.

Importing this module imports Ray Serve LLM (and with it vLLM and torch): only modules that run on
Serve replicas, or build the app, import it.
"""

from __future__ import annotations

# -- private imports, and the public API that would make each unnecessary ---------------------
# - openai_api_models (request/response models, ModelCard, to_model_metadata): a public
#   `ray.serve.llm.openai_api_models` exporting them under stable names.
# - DEFAULT_ENDPOINTS, init (the library ingress's route table and its FastAPI app with CORS,
#   metrics, request ids and error handlers): a `make_fastapi_ingress(..., middlewares=...)` option
#   or a public builder of the stock app to add routes and middleware to.
# - RawRequestInfo (request metadata the colocated endpoint hands its in-process LLMServer, as
#   the library ingress does through a handle): an in-process `LLMServer` call taking the
#   Starlette request.
# - Batcher (LLMServer's stream batcher; rayloom sends the first token before handing the stream
#   to it): an `LLMConfig` option to flush a stream's first chunk at once.
# - LoraModelLoader, DiskMultiplexConfig, global_id_manager, get_lora_id, get_base_model_id (the
#   multiplexed LoRA loader; rayloom's subclass serves adapters by configured name from a local
#   directory or s3://): a `lora_config` mapping adapter names to paths instead of one
#   dynamic_lora_loading_path.
from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.common.utils.lora_utils import get_base_model_id, get_lora_id
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    to_model_metadata,
)
from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS
from ray.llm._internal.serve.core.ingress.ingress import init as init_ingress_app
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.llm._internal.serve.utils.batcher import Batcher
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray.serve.llm.deployment import LLMServer
from ray.serve.llm.ingress import OpenAiIngress

__all__ = [
    "DEFAULT_ENDPOINTS", "PRIVATE_SURFACE", "Batcher", "ChatCompletionRequest", "CompletionRequest",
    "CompletionResponse", "DiskMultiplexConfig", "ErrorResponse", "LoraModelLoader", "ModelCard", "ModelList",
    "RawRequestInfo", "get_base_model_id", "get_lora_id", "global_id_manager", "init_ingress_app",
    "serve_controller_running", "serve_http_address", "to_model_metadata",
]

# -- private methods and attributes the subclasses use ------------------------------------------
# (class, name, "method" | "attribute", parameter names of a method or None, why / public replacement)
PRIVATE_SURFACE: tuple[tuple[type, str, str, tuple[str, ...] | None, str], ...] = (
    (OpenAiIngress, "_get_response", "method", ("self", "body", "call_method", "raw_request"),
     "RayloomIngress.health calls it and RayloomEndpoint overrides it to call the in-process server; "
     "replaced by a public hook for 'send this request to the model' on OpenAiIngress"),
    (OpenAiIngress, "_get_model_id", "method", ("self", "model"),
     "RayloomEndpoint resolves the request's model id as the library does; replaced by a public resolver"),
    (OpenAiIngress, "model", "method", ("self", "model_id"),
     "public, listed because RayloomIngress overrides it and the library's model_data/models routes call it"),
    (OpenAiIngress, "_model_cards", "attribute", None,
     "RayloomIngress builds adapter cards from the base card; replaced by a public `model_cards` property"),
    (LLMServer, "_batch_output_stream", "method", ("self", "generator"),
     "RayloomLLMServer sends the first chunk at once; replaced by a first-chunk-flush option"),
    (LLMServer, "_get_batch_interval_ms", "method", ("self", "stream"),
     "RayloomLLMServer keeps the library's interval; same replacement as _batch_output_stream"),
    (LLMServer, "_load_model", "attribute", None,
     "RayloomLLMServer.resolve_adapter loads an adapter through the library's multiplexed LRU; "
     "replaced by a public `load_lora(model_id)` on LLMServer"),
    (LLMServer, "_llm_config", "attribute", None,
     "RayloomLLMServer reads its experimental_configs after start; replaced by a public `llm_config`"),
    (LoraModelLoader, "disk_cache", "attribute", None,
     "NamedLoraLoader fills the library's cache of downloaded adapters; goes with LoraModelLoader"),
    (LoraModelLoader, "load_model_from_config", "method", ("self", "lora_model_id", "llm_config"),
     "LLMServer calls it with these keyword arguments; goes with LoraModelLoader"),
    (LoraModelLoader, "__init__", "method", ("self", "download_timeout_s", "max_tries"),
     "LLMServer builds the loader as model_downloader(download_timeout_s=..., max_tries=...)"),
    (LLMServer, "sync_init", "method", None,
     "public (documented), listed because RayloomEndpoint depends on it in-process"),
    (Batcher, "stream", "method", ("self",), "first_then_batched hands the rest of a stream to it"),
)


def serve_http_address() -> tuple[str, int] | None:
    """(host, port) the running Serve instance really listens on, or None when that is unknown.

    Ray Serve has no public getter for the HTTP options of an instance that is already running
    (`serve.start` silently keeps them); `ray.serve.context._get_global_client()` is private.
    Public API that would replace it: `serve.status().proxies` carrying the HTTP address.
    """
    from ray.serve.context import _get_global_client

    try:
        http = _get_global_client().http_config
    except Exception:  # a private API: without it the configured address is the best guess
        return None
    return http.host, http.port


def serve_controller_running() -> bool:
    """Whether Serve already runs on the connected cluster (then `serve.start` keeps its settings).

    Private: `_get_global_client(raise_if_no_controller_running=False)`. Public API that would
    replace it: a `serve.is_running()`.
    """
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False) is not None
