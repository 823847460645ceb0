"""Endpoint target: any OpenAI-compatible server (a rayloom endpoint, vLLM, or another), via the openai client.

Generation: chat requests go to /v1/chat/completions (the server renders the model's chat
template), text requests to /v1/completions, both greedy. Log-likelihood: /v1/completions with
`echo=True, logprobs=1, max_tokens=1`: the server returns each prompt token's log-probability,
the prompt's token count (`usage.prompt_tokens`) cuts off the one generated token, and the
continuation's tokens are found from the end of the text (servers count special tokens such as
BOS into `text_offset`, so offsets from the start would be shifted).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from rayloom.config import EvalConfig
from rayloom.errors import UserError
from rayloom.eval.offline import render_context
from rayloom.eval.requests import GENERATE, EvalRequest, EvalResponse, score_span
from rayloom.openai_client import error_message, openai_client

log = logging.getLogger(__name__)


def endpoint_client(url: str, api_key_env: str, timeout_s: float):
    """The openai client for `url`, with the key from the environment variable `api_key_env`."""
    return openai_client(url, os.environ.get(api_key_env), timeout=timeout_s)


def served_model(client, wanted: str, url: str) -> str:
    import openai  # here: openai is heavy; only endpoint evaluations need it

    try:
        models = [m.id for m in client.models.list().data]
    except openai.AuthenticationError:
        raise UserError(f"the endpoint {url} refused the API key (set it in the environment variable named "
                        "by eval.api_key_env / eval.judge.api_key_env)") from None
    except openai.APIConnectionError as exc:
        raise UserError(f"cannot reach the endpoint {url}: {exc}") from None
    if wanted:
        if wanted not in models:
            raise UserError(f"the endpoint {url} does not serve model {wanted!r}; it serves {models}")
        return wanted
    if not models:
        raise UserError(f"the endpoint {url} serves no model")
    return models[0]


class EndpointTarget:
    kind = "endpoint"

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.url = cfg.endpoint_url
        self.client = endpoint_client(cfg.endpoint_url, cfg.api_key_env, cfg.request_timeout_s)
        self.model = served_model(self.client, cfg.endpoint_model, cfg.endpoint_url)
        self._tokenizer = None

    def run(self, requests: list[EvalRequest]) -> dict[str, EvalResponse]:
        if any(r.kind != GENERATE and r.is_chat for r in requests) and not self.cfg.tokenizer:
            raise UserError("chat-format log-likelihood tasks against an endpoint are rendered locally with the "
                            "model's chat template: set eval.tokenizer to the model's HF directory")
        log.info("endpoint eval: %d requests to %s (model %s)", len(requests), self.url, self.model)
        with ThreadPoolExecutor(max_workers=self.cfg.num_concurrent_requests) as pool:
            responses = list(pool.map(self._answer, requests))
        return {r.id: r for r in responses}

    def _answer(self, request: EvalRequest) -> EvalResponse:
        import openai  # here: openai is heavy; only endpoint evaluations need it

        try:
            if request.kind == GENERATE:
                return EvalResponse(request.id, text=self._generate(request))
            return self._loglikelihood(request)
        except openai.BadRequestError as exc:
            # A request the server refuses (too long, bad parameter) is one failed example.
            return EvalResponse(request.id, error=f"endpoint refused the request: {error_message(exc)}")
        except openai.APIConnectionError as exc:
            raise UserError(f"lost the endpoint {self.url}: {exc}") from None

    def _generate(self, request: EvalRequest) -> str:
        common = {"model": self.model, "max_tokens": request.max_tokens, "temperature": 0.0,
                  "stop": request.stop or None}
        if request.is_chat:
            reply = self.client.chat.completions.create(messages=request.messages, **common)
            return reply.choices[0].message.content or ""
        return self.client.completions.create(prompt=request.prompt, **common).choices[0].text

    def _loglikelihood(self, request: EvalRequest) -> EvalResponse:
        extra = {}
        if request.is_chat:
            context, _ = render_context(request, self.tokenizer)
            # The rendered chat text already holds the template's BOS.
            extra["extra_body"] = {"add_special_tokens": False}
        else:
            context = request.prompt
        text = context + request.continuation
        reply = self.client.completions.create(model=self.model, prompt=text, max_tokens=1, echo=True, logprobs=1,
                                               temperature=0.0, **extra)
        choice = reply.choices[0]
        num_prompt = reply.usage.prompt_tokens if reply.usage else None
        logprobs = choice.logprobs
        if logprobs is None or not logprobs.token_logprobs or num_prompt is None:
            return EvalResponse(request.id, error="the endpoint returned no prompt logprobs (echo + logprobs "
                                                  "unsupported?)")
        tokens = logprobs.tokens[:num_prompt]
        offsets = logprobs.text_offset[:num_prompt]
        values = logprobs.token_logprobs[:num_prompt]
        tops = [max(top.values()) if top else None for top in (logprobs.top_logprobs or [None] * num_prompt)]
        tops = tops[:num_prompt]
        end = offsets[-1] + len(tokens[-1])
        boundary = end - len(request.continuation)
        total, count, greedy = score_span(values, offsets, boundary, tops)
        return EvalResponse(request.id, logprob=total, num_tokens=count, is_greedy=greedy)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # here: transformers is heavy

            self._tokenizer = AutoTokenizer.from_pretrained(self.cfg.tokenizer)
        return self._tokenizer

