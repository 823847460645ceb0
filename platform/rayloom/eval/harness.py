"""lm-evaluation-harness as rayloom's task engine: tasks, few-shot, chat templates and metrics.

Tasks are lm-eval tasks: rayloom's own are YAMLs over local JSONL in conf/tasks/ (plus
eval.task_dirs), found with lm-eval's `include_path`; lm-eval's standard benchmarks (mmlu, gsm8k,
...) are named the same way and need the Hugging Face hub for their data. Two targets:
- checkpoint: lm-eval's vLLM backend on Ray actors (rayloom.eval.engines), one engine per replica;
- endpoint: any OpenAI-compatible server through lm-eval's `local-completions` (prompts rendered
  and encoded with the model's tokenizer here, sent as token ids, log-likelihoods from echo +
  logprobs; encoded as the vLLM backend encodes, so both targets score the same tokens) or
  `local-chat-completions` (generation only; the server renders the chat template).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rayloom.config import EvalConfig, conf_dir
from rayloom.errors import UserError
from rayloom.eval.robustness import variant_tasks
from rayloom.openai_client import NO_KEY, api_base
from rayloom.secret_policy import redact_uri

log = logging.getLogger(__name__)

INSTALL_HINT = ("lm-evaluation-harness is not installed: rayloom's locks pin lm_eval; reinstall the environment "
                "(scripts/bootstrap.sh)")
OFFLINE_HINT = ("dataset not available offline: lm-eval task(s) {tasks} load their data from the Hugging Face hub, "
                "which this machine cannot reach (HF_HUB_OFFLINE={offline}). Run them where the hub is reachable "
                "(or with a warm HF datasets cache); rayloom's own tasks in conf/tasks/ need no network. ({error})")


def tasks_dir() -> Path:
    return conf_dir() / "tasks"


def include_paths(cfg: EvalConfig) -> list[str]:
    paths = [str(tasks_dir())]
    for folder in cfg.task_dirs:
        if not Path(folder).is_dir():
            raise UserError(f"eval.task_dirs: {folder} is not a folder of lm-eval task YAMLs")
        paths.append(str(Path(folder).resolve()))
    return paths


def require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return lm_eval


class _QuietCustomDataset(logging.Filter):
    # lm-eval warns once per task that loads through custom_dataset (every rayloom task) about --metadata.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def task_manager(cfg: EvalConfig):
    require_lm_eval()
    logging.getLogger("lm_eval.api.task").addFilter(_QuietCustomDataset())
    return _indexed_tasks(tuple(include_paths(cfg)))


@functools.lru_cache(maxsize=4)
def _indexed_tasks(paths: tuple[str, ...]):
    """Indexing lm-eval's thousands of task YAMLs takes ~20 s on 2 cores; a process that evaluates
    several times (tune trials, align's measures, tests) indexes each set of folders once."""
    from lm_eval.tasks import TaskManager  # here: lm-eval indexes its task folders on import

    return TaskManager(include_path=list(paths))


def load_tasks(cfg: EvalConfig, manager) -> dict:
    """{name: lm-eval Task}, per-task few-shot counts applied; unknown names and unreachable data are UserErrors."""
    from lm_eval.tasks import get_task_dict  # here: lm-eval only when a run starts

    names = list(cfg.harness.tasks) + [n for n in cfg.robustness.tasks if n not in cfg.harness.tasks]
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        ours = sorted(own_tasks(cfg))
        raise UserError(f"unknown eval task(s) {unknown}: rayloom's tasks are {ours} (YAMLs in conf/tasks/ or "
                        "eval.task_dirs); lm-eval's own are listed by `lm_eval ls tasks`")
    try:
        tasks = get_task_dict(names, manager)
    except Exception as exc:  # datasets raises many types (ConnectionError, OfflineModeIsEnabled, ...)
        if _looks_offline(exc):
            raise UserError(OFFLINE_HINT.format(tasks=[n for n in names if n not in own_tasks(cfg)],
                                                offline=os.environ.get("HF_HUB_OFFLINE", "0"),
                                                error=f"{type(exc).__name__}: {str(exc)[:200]}")) from None
        raise
    for name, shots in cfg.harness.fewshot.items():
        if name not in tasks:
            raise UserError(f"eval.harness.fewshot names {name!r}, which is not in eval.harness.tasks")
        tasks[name].set_config(key="num_fewshot", value=shots)
    for name in cfg.robustness.tasks:
        tasks.update(variant_tasks(name, tasks[name], cfg.robustness, cfg.seed))
    return tasks


def own_tasks(cfg: EvalConfig) -> set[str]:
    """Names of the tasks defined in conf/tasks and eval.task_dirs (the rest are lm-eval's own)."""
    names = set()
    for folder in include_paths(cfg):
        for file in Path(folder).rglob("*.yaml"):
            names.update(re.findall(r"^task:\s*([\w.~-]+)", file.read_text(), flags=re.MULTILINE))
    return names


def _looks_offline(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("offline", "connection", "couldn't reach", "could not reach",
                                          "max retries", "name resolution", "datasetnotfound", "doesn't exist on the hub",
                                          "localentrynotfound"))


@dataclass
class HarnessOutput:
    results: dict                     # lm-eval's output less samples (results, configs, n-shot, versions, ...)
    samples: dict[str, list[dict]] = field(default_factory=dict)


@contextlib.contextmanager
def _api_key(env_name: str):
    # lm-eval's API models read the key from OPENAI_API_KEY; set it for this run only.
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = os.environ.get(env_name) or NO_KEY
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = saved


def endpoint_model_args(cfg: EvalConfig, served_model: str) -> tuple[str, dict]:
    """lm-eval's model name and arguments for an OpenAI-compatible endpoint."""
    base = api_base(cfg.endpoint_url)
    chat = cfg.harness.endpoint_api == "chat-completions"
    # lm-eval's API models fit rolling log-likelihood windows into max_length - 1 tokens, its vLLM
    # backend into max_length - 2: one less here gives both targets the same windows.
    args = {"model": served_model, "base_url": f"{base}/{'chat/completions' if chat else 'completions'}",
            "num_concurrent": cfg.num_concurrent_requests, "max_retries": 3, "tokenized_requests": False,
            "timeout": int(cfg.request_timeout_s), "max_length": cfg.max_model_len - 1}
    if cfg.tokenizer:
        args.update(tokenizer_backend="huggingface", tokenizer=cfg.tokenizer)
        # Completions get token ids, as the offline target's engine does: with untokenized requests
        # lm-eval sends a chat-templated prompt as a JSON list of messages (which /completions
        # refuses) and cannot split a log-likelihood request's context from its continuation.
        args["tokenized_requests"] = not chat
    elif not chat:
        raise UserError("eval.target=endpoint with eval.harness.endpoint_api=completions needs eval.tokenizer (the "
                        "model's HF directory): lm-eval renders prompts and splits log-likelihoods with it")
    if chat:
        return "local-chat-completions", args
    register_endpoint_completions()
    return ENDPOINT_COMPLETIONS, args


# lm-eval's `local-completions`, encoding text as lm-eval's vLLM backend does (see below).
ENDPOINT_COMPLETIONS = "rayloom-local-completions"


@functools.cache
def register_endpoint_completions() -> None:
    """Register ENDPOINT_COMPLETIONS with lm-eval (once per process).

    lm-eval's vLLM backend (the checkpoint target) encodes a text with the tokenizer's special
    tokens (BOS) unless it already starts with BOS (a rendered chat template); its API models
    never add them. The same task would then score a different token sequence on the two targets
    (rolling perplexity gains or loses the BOS term). This subclass encodes as the vLLM backend does,
    so an endpoint serving the same checkpoint gives the same numbers."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    @register_model(ENDPOINT_COMPLETIONS)
    class EndpointCompletions(LocalCompletionsAPI):
        def tok_encode(self, string, left_truncate_len=None, add_special_tokens=False, truncation=False,
                       **kwargs):
            if isinstance(string, list | tuple):  # a batch (lm-eval passes both)
                return [self.tok_encode(s, left_truncate_len, add_special_tokens, truncation, **kwargs)
                        for s in string]
            bos = getattr(self.tokenizer, "bos_token", None)
            if self.tokenizer_backend == "huggingface" and not (bos and string.startswith(bos)):
                add_special_tokens = True
            return super().tok_encode(string, left_truncate_len=left_truncate_len,
                                      add_special_tokens=add_special_tokens, truncation=truncation, **kwargs)


def run_harness(cfg: EvalConfig, lm, tasks: dict, *, api_key_env: str = "") -> HarnessOutput:
    """lm-eval's simple_evaluate over loaded tasks; `lm` is an LM instance or (name, args) for an API model."""
    lm_eval = require_lm_eval()
    h = cfg.harness
    kwargs = dict(tasks=list(tasks.values()), num_fewshot=h.num_fewshot, limit=h.limit, log_samples=True,
                  apply_chat_template=h.apply_chat_template, fewshot_as_multiturn=h.fewshot_as_multiturn,
                  system_instruction=h.system_instruction or None, bootstrap_iters=h.bootstrap_iters,
                  random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
                  fewshot_random_seed=cfg.seed)
    # lm-eval print()s its progress notes ("bootstrapping for stddev: ..."): they go to the log.
    printed = _LogLines(log)
    try:
        with contextlib.redirect_stdout(printed):
            if isinstance(lm, tuple):
                name, args = lm
                with _api_key(api_key_env):
                    output = lm_eval.simple_evaluate(model=name, model_args=args, **kwargs)
            else:
                output = lm_eval.simple_evaluate(model=lm, **kwargs)
    finally:
        printed.flush()
    output = dict(output or {})
    samples = output.pop("samples", {}) or {}
    _redact_model_args(output)
    return HarnessOutput(output, samples)


class _LogLines:
    """A text stream whose non-empty lines become INFO records of `logger`. Lines are joined first:
    print("a", "b") writes "a", " ", "b" and "\n" separately."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        self._emit(self._partial)
        self._partial = ""

    def _emit(self, line: str) -> None:
        if line.strip():
            self.logger.info("lm-eval: %s", line.rstrip())


def _redact_model_args(output: dict) -> None:
    """lm-eval records its model_args (an API model's base_url) in the results rayloom stores:
    credentials in URLs are redacted there (secret_policy.redact_uri)."""
    config = output.get("config")
    args = config.get("model_args") if isinstance(config, dict) else None
    if isinstance(args, dict):
        config["model_args"] = {k: redact_uri(v) if isinstance(v, str) else v for k, v in args.items()}
    elif isinstance(args, str):  # lm-eval's "k=v,k=v" form
        config["model_args"] = ",".join(f"{k}={redact_uri(v)}" if sep else k
                                        for k, sep, v in (part.partition("=") for part in args.split(",")))
