"""Plain-text tables of a plan and of a search."""

from __future__ import annotations

from rayloom.planner.core import Plan
from rayloom.planner.memory import GiB
from rayloom.planner.search import Candidate


def _gib(nbytes: float | None) -> str:
    return "?" if nbytes is None else f"{nbytes / GiB:.3f}"


def format_plan(plan: Plan) -> str:
    s, shape, cap = plan.setup, plan.shape, plan.capacity
    lines = [
        f"model {shape.name}: {shape.num_params / 1e9:.3f}B params ({plan.breakdown.num_trainable / 1e6:,.2f}M "
        f"trainable), {shape.num_layers} layers, hidden {shape.hidden_size}, vocab {shape.vocab_size:,}",
        f"run: {s.num_workers} worker(s) (dp {s.data_parallel_size} x tp {s.tensor_parallel_size}), ZeRO-{s.zero_stage}, "
        f"{s.precision}, offload optimizer={s.offload_optimizer} param={s.offload_param}, micro-batch "
        f"{s.micro_batch_size} x accumulation {s.grad_accum} (global {s.global_batch_size}), seq {s.seq_len}, "
        f"activation checkpointing {'on' if s.gradient_checkpointing else 'off'}, peft {s.peft_method}",
    ]
    if cap.device_is_host:
        lines.append("CPU run: the 'device' is host RAM; device and host columns add up in the same memory.")
    lines += ["", f"{'term (per worker)':50s} {'phase':10s} {'device GiB':>10s} {'host GiB':>9s}  formula"]
    for term in plan.breakdown.terms:
        lines.append(f"{term.name:50s} {term.phase:10s} {_gib(term.device):>10s} {_gib(term.host):>9s}  {term.formula}")
    b = plan.breakdown
    lines += [
        f"{'predicted peak (persistent + max(fwd_bwd, step))':61s} {_gib(b.device_peak):>10s} {_gib(b.host_peak):>9s}",
        "",
    ]
    if cap.device_is_host:
        lines.append(f"per node: {cap.workers_per_node} worker(s) x {_gib(b.total_peak)} GiB = {_gib(plan.node_peak)} "
                     f"GiB of {_gib(cap.host_bytes)} GiB ({cap.host_source}, headroom {cap.headroom:.0%})")
    else:
        lines.append(f"device: {_gib(b.device_peak)} GiB per worker of {_gib(cap.device_bytes)} GiB "
                     f"({cap.device_source}); host: {cap.workers_per_node} worker(s) -> {_gib(plan.node_peak)} GiB "
                     f"of {_gib(cap.host_bytes)} GiB ({cap.host_source}); headroom {cap.headroom:.0%}")
    t = plan.throughput
    lines += ["", f"step time per worker ({t.hardware}):"]
    for term in t.terms:
        lines.append(f"  {term.name:50s} {term.seconds:>10.4g} s  {term.formula}")
    lines.append(f"throughput: {t.flops_per_token / 1e9:.3f} GFLOP/token (model), {t.peak_flops_per_worker / 1e12:.3g} "
                 f"TFLOP/s per worker, compute efficiency {t.efficiency:.0%}: step {t.step_s:.4g} s -> "
                 f"~{t.tokens_per_s:,.0f} tokens/s over all workers (predicted MFU {t.mfu:.0%})")
    verdict = {True: "FITS", False: "DOES NOT FIT", None: "UNKNOWN (a capacity is unknown)"}[plan.fits]
    lines.append(f"verdict: {verdict}")
    lines += [f"  - {p}" for p in plan.problems]
    return "\n".join(lines)


def format_search(candidates: list[Candidate], top_k: int) -> str:
    if not candidates:
        return "no configuration of ZeRO stage x offload x micro-batch x checkpointing fits."
    header = (f"{'#':>3s} {'zero':>4s} {'offload opt/param':18s} {'micro':>5s} {'accum':>5s} {'ckpt':>4s} "
              f"{'device GiB':>10s} {'node host GiB':>13s} {'tokens/s':>14s}")
    lines = [f"{len(candidates)} configuration(s) fit; the {min(top_k, len(candidates))} fastest (predicted):", header]
    for rank, c in enumerate(candidates[:top_k], 1):
        s, p = c.setup, c.plan
        lines.append(f"{rank:>3d} {s.zero_stage:>4d} {s.offload_optimizer + '/' + s.offload_param:18s} "
                     f"{s.micro_batch_size:>5d} {s.grad_accum:>5d} {'on' if s.gradient_checkpointing else 'off':>4s} "
                     f"{_gib(p.breakdown.device_peak):>10s} {_gib(p.node_peak):>13s} "
                     f"{p.throughput.tokens_per_s:>14,.0f}")
    return "\n".join(lines)
