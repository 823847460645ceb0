"""`rayloom chat`: a terminal chat client for any rayloom / OpenAI-compatible endpoint.

Streams the reply as it is generated, keeps the conversation (unless a prompt template is used:
then every line fills the template afresh, zero- or few-shot), reads the API key from an
environment variable (never from the command line, where it would land in shell history).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable

from rayloom.errors import UserError
from rayloom.openai_client import error_message, openai_client
from rayloom.prompts import load_registry, parse_ref

DEFAULT_URL = "http://127.0.0.1:8000/v1"


def add_chat_command(commands) -> argparse.ArgumentParser:
    """Add `rayloom chat` to the rayloom CLI's sub-commands (rayloom.cli builds the tree)."""
    parser = commands.add_parser(
        "chat", help="a terminal chat client (streaming) for any rayloom / OpenAI-compatible endpoint",
        description=__doc__.splitlines()[0],
        epilog="interactive commands: /reset (forget the conversation), /exit. Ctrl-D also exits.")
    parser.add_argument("--url", default=os.environ.get("RAYLOOM_ENDPOINT", DEFAULT_URL),
                        help="endpoint base URL (default: $RAYLOOM_ENDPOINT or %(default)s)")
    parser.add_argument("--model", default="", help="model id, or '<model>:<adapter>' (default: the first served)")
    parser.add_argument("--api-key-env", default="RAYLOOM_API_KEY",
                        help="environment variable holding the API key (default: %(default)s)")
    parser.add_argument("--system", default="", help="system prompt for the conversation")
    parser.add_argument("--template", default="",
                        help="prompt template 'name' or 'name@<shots>' from conf/prompts; each input fills it")
    parser.add_argument("--max-tokens", type=int, default=None, help="completion budget per reply")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--no-stream", action="store_true", help="wait for whole replies instead of streaming")
    parser.add_argument("--stats", action="store_true", help="print tokens, time to first token and tokens/s")
    parser.add_argument("-m", "--message", action="append", default=[],
                        help="send this message and exit (repeatable: one conversation); stdin lines when piped")
    parser.set_defaults(run=run_chat)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """`rayloom chat`'s parser on its own (the same one the CLI's tree holds)."""
    return add_chat_command(argparse.ArgumentParser(prog="rayloom").add_subparsers())


def chat_main(argv: list[str]) -> int:
    """`rayloom chat ARGV...`."""
    return run_chat(build_parser().parse_args(argv))


def run_chat(args: argparse.Namespace) -> int:
    import openai

    api_key = os.environ.get(args.api_key_env, "").split(",")[0].strip() or None
    client = openai_client(args.url, api_key, max_retries=1)
    template = load_chat_template(args.template) if args.template else None
    try:
        model = args.model or client.models.list().data[0].id
        session = ChatSession(client, model, args, template)
        if args.message:
            inputs: Iterable[str] = args.message
        elif not sys.stdin.isatty():
            inputs = (line.rstrip("\n") for line in sys.stdin if line.strip())
        else:
            print(f"chatting with {model} at {args.url} (/reset, /exit; Ctrl-D quits)")
            inputs = _prompts()
        for text in inputs:
            if text.strip() in ("/exit", "/quit"):
                break
            if text.strip() == "/reset":
                session.reset()
                print("(conversation cleared)")
                continue
            session.send(text)
    except openai.AuthenticationError:
        print(f"rayloom chat: the endpoint refused the API key: export {args.api_key_env}=<key>", file=sys.stderr)
        return 1
    except openai.APIConnectionError as exc:
        print(f"rayloom chat: cannot reach {args.url}: {exc.__cause__ or exc}", file=sys.stderr)
        return 1
    except openai.APIStatusError as exc:
        print(f"rayloom chat: {exc.status_code}: {error_message(exc)}", file=sys.stderr)
        return 1
    return 0


class ChatSession:
    def __init__(self, client, model: str, args: argparse.Namespace, template):
        self.client, self.model, self.args, self.template = client, model, args, template
        self.history: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.history = [{"role": "system", "content": self.args.system}] if self.args.system else []

    def send(self, text: str) -> str:
        if self.template is not None:
            template, shots = self.template
            messages = template.messages(shots, **{template.variables[0]: text})
        else:
            self.history.append({"role": "user", "content": text})
            messages = self.history
        options = {"model": self.model, "messages": messages}
        if self.args.max_tokens is not None:
            options["max_tokens"] = self.args.max_tokens
        if self.args.temperature is not None:
            options["temperature"] = self.args.temperature
        start = time.perf_counter()
        first_token_s = None
        usage = None
        if self.args.no_stream:
            response = self.client.chat.completions.create(**options)
            reply = response.choices[0].message.content or ""
            usage = response.usage
            print(reply, flush=True)
        else:
            parts = []
            stream = self.client.chat.completions.create(**options, stream=True,
                                                         stream_options={"include_usage": True})
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.choices and chunk.choices[0].delta.content:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - start
                    parts.append(chunk.choices[0].delta.content)
                    print(chunk.choices[0].delta.content, end="", flush=True)
            print(flush=True)
            reply = "".join(parts)
        if self.template is None:
            self.history.append({"role": "assistant", "content": reply})
        if self.args.stats and usage is not None:
            elapsed = time.perf_counter() - start
            ttft = f", first token {1000 * first_token_s:.0f} ms" if first_token_s is not None else ""
            print(f"[{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens in "
                  f"{elapsed:.2f}s{ttft}, {usage.completion_tokens / max(elapsed, 1e-9):.1f} tokens/s]", flush=True)
        return reply


def load_chat_template(ref: str, registry=None):
    """(template, shots) for `--template`: a registry template with one variable, filled by each input."""
    name, shots = parse_ref(ref)
    template = (registry or load_registry()).get(name)
    if len(template.variables) != 1:
        raise UserError(f"--template {ref}: chat fills one variable per input, but {name!r} takes "
                        f"{list(template.variables)}")
    return template, shots


def _prompts() -> Iterable[str]:
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print()
            return
        if text.strip():
            yield text

