"""Per-worker memory of a training run, term by term, device and host apart.

Every term is bytes on one worker (one data-parallel rank). Terms carry a phase: `persistent`
(allocated once, alive all run), `fwd_bwd` (alive at the start of a micro-batch's backward, the usual
peak) or `step` (alive during the optimizer step). The predicted peak is
persistent + max(fwd_bwd, step) on each side. On a CPU-only run the "device" is host RAM too: the
two sides add up in the same memory, and `Breakdown.device_is_host` says so.

Precision (DeepSpeed's accounting, `deepspeed.runtime.zero.stage_1_and_2`/`stage3`): w = 4 bytes
(fp32) or 2 (bf16/fp16) per working parameter, gradient and activation; ZeRO 1-3 keep an fp32 master
partition (4 bytes; also under fp32, where ZeRO clones the partition), an fp32 gradient partition
at the step (4) and Adam's two moments (8), each / dp. ZeRO-0 keeps everything whole: bf16/fp16 adds
an fp32 master and an fp32 gradient accumulator (DeepSpeed's BF16_Optimizer), fp32 adds nothing.
Only trainable parameters have gradients and optimizer state (LoRA: the adapters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.planner.shapes import ModelShape

GiB = 2**30
_WORKING_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# QLoRA: 4-bit NF4 weights plus double-quantised block constants (64-weight blocks, fp8 absmax,
# second-level fp32 per 256 blocks): 4 + 8/64 + 32/(64*256) bits = 4.127 bits per weight.
QLORA_BYTES_PER_WEIGHT = 4.127 / 8


@dataclass(frozen=True)
class Setup:
    """The knobs of a run that change memory; `rayloom.planner.setup_from_config` fills it."""

    zero_stage: int = 2
    offload_optimizer: str = "none"   # none | cpu | nvme
    offload_param: str = "none"       # none | cpu | nvme (ZeRO-3 only)
    precision: str = "fp32"           # fp32 | bf16 | fp16
    num_workers: int = 1
    tensor_parallel_size: int = 1
    micro_batch_size: int = 1
    grad_accum: int = 1
    seq_len: int = 256
    gradient_checkpointing: bool = False
    use_gpu: bool = False
    # PEFT: none | lora | dora | qlora, rank, targeted module names, dropout.
    peft_method: str = "none"
    lora_r: int = 8
    lora_targets: tuple[str, ...] = ()
    lora_dropout: float = 0.0
    # Preference objectives run chosen + rejected rows together (2 x micro-batch rows);
    # dpo/ipo also need a reference policy: a frozen copy, or the base with the adapter disabled.
    preference: bool = False
    uses_reference: bool = False
    reference_copy: bool = False
    # DeepSpeed buffers (elements), as rayloom.train.ds_config writes them.
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000
    stage3_prefetch_bucket_size: int = 5_000_000
    stage3_param_persistence_threshold: int = 10_000
    stage3_max_live_parameters: int = 1_000_000_000
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    attention: str = "sdpa"
    rollout_kv_cache_bytes: float = 0.0
    device_overhead_bytes: float = 1.0 * GiB
    host_overhead_bytes: float = 1.5 * GiB

    @property
    def data_parallel_size(self) -> int:
        return max(self.num_workers // self.tensor_parallel_size, 1)

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.data_parallel_size

    @property
    def w(self) -> int:
        """Bytes of a working (forward/backward) parameter, gradient or activation element."""
        return _WORKING_BYTES[self.precision]


@dataclass(frozen=True)
class Term:
    name: str
    device: float
    host: float
    phase: str  # persistent | fwd_bwd | step
    formula: str


@dataclass
class Breakdown:
    terms: list[Term] = field(default_factory=list)
    device_is_host: bool = True
    num_params: int = 0
    num_trainable: int = 0

    def add(self, name: str, nbytes: float, *, on_host: bool = False, phase: str = "persistent",
            formula: str = "") -> None:
        if nbytes:
            self.terms.append(Term(name, 0.0 if on_host else float(nbytes), float(nbytes) if on_host else 0.0,
                                   phase, formula))

    def _peak(self, side: str) -> float:
        by_phase = {"persistent": 0.0, "fwd_bwd": 0.0, "step": 0.0}
        for term in self.terms:
            by_phase[term.phase] += getattr(term, side)
        return by_phase["persistent"] + max(by_phase["fwd_bwd"], by_phase["step"])

    @property
    def device_peak(self) -> float:
        return self._peak("device")

    @property
    def host_peak(self) -> float:
        return self._peak("host")

    @property
    def total_peak(self) -> float:
        """Device + host of one worker: what one process holds when the device is host RAM (CPU runs)."""
        combined = Breakdown([Term(t.name, t.device + t.host, 0.0, t.phase, t.formula) for t in self.terms])
        return combined.device_peak

    def get(self, name: str) -> Term | None:
        return next((t for t in self.terms if t.name == name), None)


# --- parameter counts -----------------------------------------------------------------------

def trainable_params(shape: ModelShape, setup: Setup) -> int:
    """Full fine-tuning trains everything; LoRA/DoRA/QLoRA train r x (in + out) per targeted matrix
    (DoRA adds one magnitude vector of `out` per matrix)."""
    if setup.peft_method == "none":
        return shape.num_params
    linears = shape.linear_shapes()
    per_layer = sum(setup.lora_r * (i + o) + (o if setup.peft_method == "dora" else 0)
                    for name, (i, o) in linears.items() if name in setup.lora_targets)
    return shape.num_layers * per_layer


def _quantized_params(shape: ModelShape, setup: Setup) -> int:
    """QLoRA quantizes every decoder projection; embeddings, LM head and norms stay unquantized."""
    if setup.peft_method != "qlora":
        return 0
    return shape.num_layers * sum(i * o for i, o in shape.linear_shapes().values())


# --- activations ----------------------------------------------------------------------------

def activation_bytes_per_token_layer(shape: ModelShape, setup: Setup) -> float:
    """Bytes one decoder layer keeps for backward, per token (no checkpointing).

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
    sec. 4.1) count what each op saves for its backward: 34·s·b·h + 5·a·s²·b bytes per GPT layer
    in 16-bit with dropout. Redone op by op for a Llama layer as transformers runs it (SDPA attention,
    RMSNorm computed in fp32, SwiGLU, no dropout, grouped KV heads), with e = activation bytes
    (4 fp32, 2 bf16), h hidden, kv = KV heads x head dim, f MLP width, a heads, per token:

    * RMSNorm x2: `x.float()` is saved by pow and by the rsqrt multiply (4h; under fp32 it is the
      layer's input itself); the normalised tensor is saved by `weight *` only when the norm
      weight trains (e·h).
    * attention: the projections' shared input (e·h) only when q/k/v train or carry LoRA (a frozen
      linear saves no input: its weight gets no gradient); RoPE'd q and k and v saved by SDPA
      (e·(h + 2kv)); SDPA's output and its log-sum-exp (e·h + 4a); the contiguous copy that feeds
      o_proj (e·h) only when o_proj trains. SDPA's fused kernels keep no s x s score matrix; eager
      attention adds its softmax, (4 + e)·a·s per token (fp32 softmax, then a cast), Korthikanti's
      5as/h term.
    * SwiGLU MLP: gate output (saved by SiLU), SiLU output and up output (saved by the product):
      3·e·f; the shared gate/up input (e·h) and down_proj's input (e·f) only when those weights train.
    * LoRA on a targeted matrix: the A projection's output (e·r, saved by B); with dropout the
      dropped copy of the input and its mask ((e + 1)·in).

    Full fine-tuning in fp32: 36h + 8kv + 16f + 4a bytes per token per layer.
    """
    h, kv, f, a, e = shape.hidden_size, shape.kv_size, shape.intermediate_size, shape.num_heads, setup.w
    full = setup.peft_method == "none"
    targets = set(setup.lora_targets) if not full else set()

    def saves_input(*names: str) -> bool:
        return full or any(n in targets for n in names)

    norms = 2 * (4 * h + (e * h if full else 0))
    attention = e * (h + 2 * kv) + e * h + 4 * a
    attention += e * h * saves_input("q_proj", "k_proj", "v_proj") + e * h * saves_input("o_proj")
    if setup.attention == "eager":
        attention += (4 + (e if e < 4 else 0)) * a * setup.seq_len
    mlp = 3 * e * f + e * h * saves_input("gate_proj", "up_proj") + e * f * saves_input("down_proj")
    lora = 0.0
    for name, (d_in, _) in shape.linear_shapes().items():
        if name in targets:
            lora += e * setup.lora_r + ((e + 1) * d_in if setup.lora_dropout > 0 else 0)
    return float(norms + attention + mlp + lora)


def rows_per_micro_batch(setup: Setup) -> int:
    return setup.micro_batch_size * (2 if setup.preference else 1)


def activation_bytes(shape: ModelShape, setup: Setup) -> float:
    """All layers' saved activations of one micro-batch, plus the final norm and the input columns.

    With activation checkpointing (transformers' non-reentrant checkpoint per decoder layer) each
    layer keeps only its input (e·h per token) and one layer is recomputed at a time during
    backward, so the peak is L·e·h + one layer's activations."""
    tokens = rows_per_micro_batch(setup) * setup.seq_len
    per_layer = activation_bytes_per_token_layer(shape, setup)
    if setup.gradient_checkpointing:
        layers = shape.num_layers * setup.w * shape.hidden_size + per_layer
    else:
        layers = shape.num_layers * per_layer
    final_norm = 4 * shape.hidden_size + setup.w * shape.hidden_size
    inputs = 4 * 8  # input_ids, labels, position_ids, attention_mask as int64
    return tokens * (layers + final_norm + inputs)


def logits_bytes(shape: ModelShape, setup: Setup) -> float:
    """Logits and loss buffers of one micro-batch at the start of its backward (V = vocabulary).

    Causal LM (transformers' ForCausalLMLoss): logits are upcast to fp32, log-softmax keeps its fp32
    output (4V), the NLL backward writes a dense fp32 gradient (4V) and log-softmax's backward
    another (4V): 12V bytes per token, plus the cast back (e·V) under 16-bit.
    Preference (sequence log-probs via logsumexp over the logits): the policy's logits are kept
    (e·V, + a 4V fp32 copy under 16-bit), the reference's logits too (e·V, when a reference
    exists), and the backward writes two fp32 buffers (8V, + e·V cast under 16-bit).
    """
    tokens = rows_per_micro_batch(setup) * setup.seq_len
    v, e = shape.vocab_size, setup.w
    upcast = 4 if e < 4 else 0
    cast_back = e if e < 4 else 0
    if setup.preference:
        per_token = e + upcast + (e if setup.uses_reference else 0) + 8 + cast_back
    else:
        per_token = 12 + cast_back
    return float(tokens * v * per_token)


# --- the breakdown ---------------------------------------------------------------------------

def estimate(shape: ModelShape, setup: Setup) -> Breakdown:
    """Every term of one worker's memory for this shape and setup."""
    w, dp, stage = setup.w, setup.data_parallel_size, setup.zero_stage
    tp = setup.tensor_parallel_size
    out = Breakdown(device_is_host=not setup.use_gpu)
    n_all = shape.num_params
    n_train = trainable_params(shape, setup)
    n_quant = _quantized_params(shape, setup)
    out.num_params, out.num_trainable = n_all + (n_train if setup.peft_method != "none" else 0), n_train
    shard = dp if stage >= 1 else 1           # optimizer state (and master) partitioning
    param_shard = dp if stage == 3 else 1
    states_on_host = setup.offload_optimizer != "none"
    params_on_host = setup.offload_param != "none"
    # AutoTP splits the decoder projections across tp ranks; embeddings/norms stay whole.
    tp_cut = (shape.num_layers * sum(i * o for i, o in shape.linear_shapes().values())) * (1 - 1 / tp)

    # Parameters: the frozen base (LoRA: working precision, QLoRA: 4-bit projections) + trainables.
    if setup.peft_method == "none":
        param_bytes = w * (n_all - tp_cut)
        what = f"{w} B x {n_all:,} params"
    else:
        # prepare_model_for_kbit_training upcasts QLoRA's unquantized weights to fp32.
        other = n_all - n_quant
        base = n_quant * QLORA_BYTES_PER_WEIGHT + other * (4 if n_quant else w)
        param_bytes = base + w * n_train
        what = f"frozen base {base / GiB:.2f} GiB + {w} B x {n_train:,} adapter params"
    out.add("parameters", param_bytes / param_shard, on_host=params_on_host,
            formula=what + (f" / dp {dp}" if param_shard > 1 else ""))
    if stage == 3:
        # Gathered for compute: the current module plus the prefetch bucket, capped by max_live;
        # parameters under the persistence threshold stay gathered all the time.
        live = min(shape.layer_params + setup.stage3_prefetch_bucket_size, setup.stage3_max_live_parameters, n_all)
        live = max(live, shape.largest_layer_params)
        out.add("zero3 gathered parameters", w * live, phase="fwd_bwd",
                formula=f"{w} B x (one layer + prefetch bucket {setup.stage3_prefetch_bucket_size:,})")
        small = (2 * shape.num_layers + 1) * shape.hidden_size
        if shape.hidden_size < setup.stage3_param_persistence_threshold:
            out.add("zero3 persistent small parameters", w * small, formula="norm weights under the threshold")

    # Gradients are written during backward, after the activation peak at its start: with one
    # micro-batch per step (grads set to None after each step) they belong to the late-backward/step
    # phase; with accumulation they live across the next micro-batch's forward. ZeRO-3 keeps a
    # zero-filled gradient partition buffer from initialisation on. DeepSpeed 0.19 reduces ZeRO-1
    # gradients through the same bucketed path as ZeRO-2 (measured equal on CPU): this rank keeps its
    # partition. With optimizer offload under ZeRO-1/2 the working gradients stay whole until they
    # are copied to the host partition (measured).
    grads_live = "persistent" if (setup.grad_accum > 1 or stage == 3) else "step"
    whole_grads = stage == 0 or (states_on_host and stage in (1, 2))
    grad_div = 1 if whole_grads else dp if stage >= 1 else 1
    out.add("gradients", w * n_train / grad_div, phase=grads_live,
            formula=f"{w} B x {n_train:,}" + (f" / dp {dp}" if grad_div > 1 else ""))
    if stage == 0:
        if w < 4:
            out.add("fp32 master weights", 4 * n_train, formula="4 B x trainable (BF16_Optimizer)")
            out.add("fp32 gradient accumulator", 4 * n_train, phase=grads_live, formula="4 B x trainable")
        out.add("optimizer states (Adam m, v)", 8 * n_train, phase="persistent", formula="8 B x trainable")
    else:
        out.add("fp32 master partition", 4 * n_train / shard, on_host=states_on_host,
                formula=f"4 B x {n_train:,} / dp {dp}")
        out.add("optimizer states (Adam m, v)", 8 * n_train / shard, on_host=states_on_host,
                formula=f"8 B x {n_train:,} / dp {dp}")
        # The fp32 gradient partition the optimizer steps on: kept on the host with offload, built at
        # the step otherwise.
        out.add("fp32 gradient partition", 4 * n_train / shard, on_host=states_on_host,
                phase="persistent" if states_on_host else "step", formula=f"4 B x {n_train:,} / dp {dp}")
        if setup.contiguous_gradients or states_on_host:
            # DeepSpeed allocates reduce_bucket_size elements (x2 with overlap_comm) at the start of
            # backward: a GPU allocator counts all of it at the activation peak. A CPU process's RSS
            # only shows the pages gradients are written to (at most the trainable count), late in
            # backward.
            elements = setup.reduce_bucket_size if setup.use_gpu else min(setup.reduce_bucket_size, n_train)
            bucket_bytes = 4 if stage == 1 else w  # ZeRO-1 stages an fp32 accumulator
            copies = 2 if setup.overlap_comm else 1
            bucket_phase = "fwd_bwd" if setup.use_gpu else "step"
            out.add("reduce buckets", bucket_bytes * elements * copies, phase=bucket_phase,
                    formula=f"{bucket_bytes} B x {elements:,} x {copies}")
            if stage == 3:
                # reduce_scatter_coalesced concatenates the padded bucket (a full copy) and writes
                # this rank's reduced partition.
                flushed = min(setup.reduce_bucket_size, n_train)
                out.add("zero3 reduce-scatter staging", w * flushed * (1 + 1 / dp), phase=bucket_phase,
                        formula=f"{w} B x {flushed:,} x (1 + 1/dp)")
    if not setup.use_gpu and not states_on_host:
        # rayloom runs torch's AdamW on CPU (foreach): its step allocates sqrt(v) for every tensor.
        out.add("AdamW step temporaries (torch foreach)", 4 * n_train / shard, phase="step",
                formula=f"4 B x {n_train:,}" + (f" / dp {dp}" if shard > 1 else ""))
    if setup.offload_optimizer == "nvme" or setup.offload_param == "nvme":
        # Swap buffers in pinned host memory: DeepSpeed stages optimizer sub-groups through a few
        # buffers; a rough bound (not validated here): 4 fp32 copies of the largest tensor.
        out.add("nvme swap buffers", 4 * 4 * shape.largest_layer_params, on_host=True,
                formula="4 x 4 B x largest tensor (rough)")

    # Reference policy of dpo/ipo: a frozen copy (ZeRO-3 partitions it like the policy), or none
    # (the base with the adapter disabled; one more forward, nothing kept).
    if setup.uses_reference and setup.reference_copy:
        ref = (n_quant * QLORA_BYTES_PER_WEIGHT + (n_all - n_quant) * w) / param_shard
        out.add("reference model copy", ref, on_host=params_on_host,
                formula=f"{w} B x {n_all:,}" + (f" / dp {dp}" if param_shard > 1 else ""))

    out.add("activations", activation_bytes(shape, setup), phase="fwd_bwd",
            formula=f"{rows_per_micro_batch(setup)} rows x {setup.seq_len} tokens x "
                    f"{activation_bytes_per_token_layer(shape, setup):,.0f} B x {shape.num_layers} layers"
                    + (" (checkpointed)" if setup.gradient_checkpointing else ""))
    out.add("logits and loss buffers", logits_bytes(shape, setup), phase="fwd_bwd",
            formula=f"{rows_per_micro_batch(setup) * setup.seq_len} tokens x vocab {shape.vocab_size:,}")
    out.add("rollout KV cache", setup.rollout_kv_cache_bytes, formula="plan.rollout_kv_cache_gb")
    if setup.use_gpu:
        out.add("CUDA context and NCCL", setup.device_overhead_bytes, formula="plan.device_overhead_gb")
    out.add("runtime baseline (Python, torch, Ray, DeepSpeed)", setup.host_overhead_bytes, on_host=True,
            formula="plan.host_overhead_gb")
    return out
