"""Helpers for the serving tests: a real peft LoRA adapter on the tiny model.

Imported by tests/unit/test_serve_*.py and tests/integration/test_serve_*.py as
`from helpers.serve_fixtures import ...` (tests/ is on sys.path).
"""

from __future__ import annotations

from pathlib import Path


def make_lora_adapter(model_dir: str | Path, out_dir: str | Path, *, rank: int = 8, seed: int = 1) -> Path:
    """Save a peft LoRA adapter for `model_dir` whose lora_B is non-zero, so it changes outputs.

    peft initialises lora_B to zeros (an adapter that does nothing until trained); a trained
    adapter is what serving sees, so the weights here are random and large enough to move the
    greedy tokens of a random tiny model.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from rayloom.models import load_model

    torch.manual_seed(seed)
    model = load_model(model_dir)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.normal_(0.0, 0.5)
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    return out


class LoadGenerator:
    """A bounded load on an endpoint through the official openai client: `concurrency` threads,
    each sending small requests (every other one streamed) until `stop()`, `max_requests` or
    `max_seconds`. Records each request's outcome, latency and the phase it started in."""

    def __init__(self, base_url: str, api_key: str, model: str, *, concurrency: int = 8,
                 max_requests: int = 5000, max_seconds: float = 1200.0):
        import threading

        from rayloom.serve import openai_client

        self._client = openai_client(base_url, api_key, max_retries=0, timeout=120)
        self.model = model
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.phase = "steady"
        self.results: list[dict] = []  # {"phase", "ok", "latency_s", "error"}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(concurrency)]

    def start(self) -> LoadGenerator:
        import time

        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[dict]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        return self.results

    def failures(self) -> list[dict]:
        return [r for r in self.results if not r["ok"]]

    def _worker(self, index: int) -> None:
        import time

        n = 0
        while not self._stop.is_set() and time.monotonic() - self._started < self.max_seconds:
            with self._lock:
                if len(self.results) >= self.max_requests:
                    return
            phase, start = self.phase, time.perf_counter()
            try:
                if (index + n) % 2:
                    stream = self._client.chat.completions.create(
                        model=self.model, messages=[{"role": "user", "content": f"count to {n}"}], max_tokens=8,
                        stream=True, extra_body={"ignore_eos": True})
                    tokens = sum(1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
                    ok, error = tokens > 0, None if tokens else "empty stream"
                else:
                    reply = self._client.completions.create(model=self.model, prompt=f"{n} + {index} =", max_tokens=4,
                                                            extra_body={"ignore_eos": True})
                    ok, error = reply.usage.completion_tokens == 4, None
            except Exception as exc:  # any failed request is what the caller counts
                ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
            with self._lock:
                self.results.append({"phase": phase, "ok": ok, "latency_s": time.perf_counter() - start,
                                     "error": error})
            n += 1
