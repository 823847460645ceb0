"""Train, DeepSpeed, PEFT and objective groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayloom.config._validate import fraction, non_negative, one_of, positive, require, safe_name

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    offload_optimizer: str = "none"
    offload_param: str = "none"
    nvme_path: str = ""
    precision: str = "fp32"
    # fp16 loss scaling: 0 -> dynamic.
    loss_scale: float = 0.0
    initial_scale_power: int = 16
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000
    stage3_prefetch_bucket_size: int = 5_000_000
    stage3_param_persistence_threshold: int = 10_000
    # DeepSpeed AutoTP tensor-parallel degree for training (1 = off).
    tensor_parallel_size: int = 1
    # Activation checkpointing (train.gradient_checkpointing) options: keep checkpointed
    # activations partitioned across ranks / on the CPU.
    partition_activations: bool = False
    cpu_checkpointing: bool = False
    # ZeRO-3: keep this many parameters gathered at once (bounds the live memory of a layer).
    stage3_max_live_parameters: int = 1_000_000_000
    # NVMe offload: AIO block size and queue depth (DeepSpeed's defaults).
    aio_block_size: int = 1_048_576
    aio_queue_depth: int = 8

    def __post_init__(self) -> None:
        one_of(self.zero_stage, (0, 1, 2, 3), "deepspeed.zero_stage")
        one_of(self.offload_optimizer, OFFLOAD_DEVICES, "deepspeed.offload_optimizer")
        one_of(self.offload_param, OFFLOAD_DEVICES, "deepspeed.offload_param")
        one_of(self.precision, PRECISIONS, "deepspeed.precision")
        require(self.offload_optimizer == "none" or self.zero_stage >= 1, "deepspeed.offload_optimizer",
                f"optimizer offload needs ZeRO stage 1-3, deepspeed.zero_stage is {self.zero_stage}",
                self.offload_optimizer)
        require(self.offload_param == "none" or self.zero_stage == 3, "deepspeed.offload_param",
                f"parameter offload needs ZeRO stage 3, deepspeed.zero_stage is {self.zero_stage}",
                self.offload_param)
        uses_nvme = "nvme" in (self.offload_optimizer, self.offload_param)
        require(not uses_nvme or bool(self.nvme_path), "deepspeed.nvme_path",
                "offload to nvme needs deepspeed.nvme_path", self.nvme_path)
        non_negative(self.loss_scale, "deepspeed.loss_scale")
        positive(self.reduce_bucket_size, "deepspeed.reduce_bucket_size")
        positive(self.allgather_bucket_size, "deepspeed.allgather_bucket_size")
        positive(self.tensor_parallel_size, "deepspeed.tensor_parallel_size")
        require(self.tensor_parallel_size == 1 or self.zero_stage <= 1, "deepspeed.tensor_parallel_size",
                f"AutoTP training works with ZeRO stage 0-1, deepspeed.zero_stage is {self.zero_stage}",
                self.tensor_parallel_size)
        require(self.tensor_parallel_size == 1 or self.offload_optimizer == "none", "deepspeed.offload_optimizer",
                "optimizer offload is not combined with AutoTP tensor parallelism", self.offload_optimizer)
        non_negative(self.initial_scale_power, "deepspeed.initial_scale_power")
        positive(self.stage3_prefetch_bucket_size, "deepspeed.stage3_prefetch_bucket_size")
        non_negative(self.stage3_param_persistence_threshold, "deepspeed.stage3_param_persistence_threshold")
        positive(self.stage3_max_live_parameters, "deepspeed.stage3_max_live_parameters")
        positive(self.aio_block_size, "deepspeed.aio_block_size")
        positive(self.aio_queue_depth, "deepspeed.aio_queue_depth")
        require(not self.cpu_checkpointing or self.partition_activations, "deepspeed.cpu_checkpointing",
                "CPU activation checkpointing needs deepspeed.partition_activations=true", self.cpu_checkpointing)


@dataclass
class PeftConfig:
    method: str = "none"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: list[str] = field(default_factory=list)
    # Bias training: "none", "all" or "lora_only" (peft's LoraConfig.bias).
    bias: str = "none"
    # QLoRA: 4-bit quant type of the frozen base ("nf4" or "fp4") and the compute dtype.
    quant_type: str = "nf4"
    compute_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        one_of(self.method, ("none", "lora", "dora", "qlora"), "peft.method")
        one_of(self.bias, ("none", "all", "lora_only"), "peft.bias")
        one_of(self.quant_type, ("nf4", "fp4"), "peft.quant_type")
        one_of(self.compute_dtype, ("bfloat16", "float16", "float32"), "peft.compute_dtype")
        positive(self.r, "peft.r")
        positive(self.alpha, "peft.alpha")
        fraction(self.dropout, "peft.dropout", inclusive_high=False)
        require(self.method == "none" or bool(self.target_modules), "peft.target_modules",
                "must name at least one module", self.target_modules)


# Objectives the trainer knows: clm and sft are registered by rayloom.train, the alignment ones by
# rayloom.align (train.objectives.register_objective); the config checks the name early.
OBJECTIVE_NAMES = ("clm", "sft", "dpo", "ipo", "orpo", "safety_sft", "grpo")
# Preference objectives: they train on preference shards (chosen/rejected pairs).
PREFERENCE_OBJECTIVES = ("dpo", "ipo", "orpo")
# objective.loss_type values per objective ("" picks the first).
LOSS_TYPES = {"dpo": ("sigmoid", "hinge", "robust"), "ipo": ("ipo",), "orpo": ("orpo",),
              # grpo: TRL's GRPO loss aggregations (TRL's default dapo first); see rayloom.align.grpo_loss.
              "grpo": ("dapo", "grpo", "dr_grpo", "bnpo")}
# Where the reference policy of dpo/ipo comes from.
REFERENCE_MODES = ("auto", "copy")


# grpo: how group-relative advantages are scaled (TRL's scale_rewards) and where rollouts run.
SCALE_REWARDS = ("group", "batch", "none")
ROLLOUT_PLACEMENTS = ("colocated", "split")


@dataclass
class GrpoConfig:
    """objective=grpo: online RL with verifiable rewards (rayloom.align.grpo)."""

    # Completions sampled per prompt; advantages are relative to the prompt's group.
    num_generations: int = 4
    # Most tokens a completion may have (dr_grpo's normaliser too).
    max_completion_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    # PPO clipping of the policy ratio: [1 - epsilon, 1 + epsilon_high] (epsilon_high 0 -> epsilon).
    epsilon: float = 0.2
    epsilon_high: float = 0.0
    # KL(policy || reference) coefficient, k3 estimator as TRL; 0 -> no reference forward at all.
    kl_coef: float = 0.0
    scale_rewards: str = "group"
    # Reward functions, "module.function" (hydra.utils.get_method), called as
    # fn(prompts=..., completions=..., answers=..., finished=...) -> list[float]; summed with weights.
    rewards: list[str] = field(default_factory=lambda: ["rayloom.align.rewards.exact_match",
                                                        "rayloom.align.rewards.format_reward"])
    # One weight per reward function; empty -> 1.0 each.
    reward_weights: list[float] = field(default_factory=list)
    # vLLM rollout engines (Ray actors) per training worker.
    num_engines: int = 1
    # colocated: the engines take no CPUs of their own and take turns with training on the
    # workers' nodes; split: each engine reserves rollout_cpus (rollout_gpus) of its own.
    placement: str = "colocated"
    rollout_cpus: float = 1.0
    rollout_gpus: float = 0.0
    # vLLM KV cache per engine (GiB; VLLM_CPU_KVCACHE_SPACE on CPU, the memory fraction's share on GPU).
    kv_cache_gib: float = 1.0
    # Replacements of dead rollout engines a worker may start before the run fails.
    max_engine_restarts: int = 3

    def __post_init__(self) -> None:
        require(self.num_generations >= 2, "objective.grpo.num_generations",
                "must be >= 2 (advantages are relative to the prompt's group)", self.num_generations)
        positive(self.max_completion_tokens, "objective.grpo.max_completion_tokens")
        positive(self.temperature, "objective.grpo.temperature")
        require(0.0 < self.top_p <= 1.0, "objective.grpo.top_p", "must be in (0, 1]", self.top_p)
        fraction(self.epsilon, "objective.grpo.epsilon", inclusive_high=False)
        require(self.epsilon_high >= 0.0, "objective.grpo.epsilon_high", "must be >= 0", self.epsilon_high)
        require(self.kl_coef >= 0.0, "objective.grpo.kl_coef", "must be >= 0", self.kl_coef)
        one_of(self.scale_rewards, SCALE_REWARDS, "objective.grpo.scale_rewards")
        require(bool(self.rewards), "objective.grpo.rewards", "must name at least one reward function", self.rewards)
        require(not self.reward_weights or len(self.reward_weights) == len(self.rewards),
                "objective.grpo.reward_weights", "needs one weight per reward function (or none)", self.reward_weights)
        positive(self.num_engines, "objective.grpo.num_engines")
        one_of(self.placement, ROLLOUT_PLACEMENTS, "objective.grpo.placement")
        require(self.rollout_cpus >= 0 and self.rollout_gpus >= 0, "objective.grpo.rollout_cpus",
                "rollout resources must be >= 0", (self.rollout_cpus, self.rollout_gpus))
        positive(self.kv_cache_gib, "objective.grpo.kv_cache_gib")
        require(self.max_engine_restarts >= 0, "objective.grpo.max_engine_restarts", "must be >= 0",
                self.max_engine_restarts)

    @property
    def resolved_epsilon_high(self) -> float:
        return self.epsilon_high or self.epsilon


@dataclass
class ObjectiveConfig:
    # clm: causal-LM pre-training on packed shards; sft: the same loss on chat shards whose
    # labels already mask everything but assistant turns; dpo/ipo: preference tuning against a
    # reference policy; orpo: reference-free preference tuning (SFT loss + odds-ratio term);
    # safety_sft: sft with the shipped safety seed set mixed into every batch.
    name: str = "clm"
    # dpo/ipo: strength of the KL regularisation (the implicit reward is beta * log-ratio to the
    # reference); orpo: weight of the odds-ratio term (ORPO's lambda).
    beta: float = 0.1
    # dpo: probability that a pair's preference label is flipped (conservative DPO for
    # "sigmoid", the unbiased "robust" estimator); must stay below 0.5.
    label_smoothing: float = 0.0
    # dpo: "sigmoid" (the DPO paper), "hinge" (SLiC) or "robust" (rDPO); "" -> the objective's own.
    loss_type: str = ""
    # dpo/ipo: "auto" -> with a peft adapter the reference is the base with the adapter disabled (no
    # second copy in memory), without one a frozen copy of the starting model; "copy" -> always a
    # frozen copy (run through DeepSpeed, so ZeRO-3 partitions it as well).
    reference: str = "auto"
    # safety_sft: fraction of the training rows drawn from the shipped safety seed set.
    safety_ratio: float = 0.2
    # safety_sft: the seed set's SFT records (JSONL of {"messages": [...]}); "" -> the shipped
    # conf/safety/safety_sft.jsonl.
    safety_data: str = ""
    # grpo: rollouts, rewards and the clipped policy-gradient loss (GrpoConfig).
    grpo: GrpoConfig = field(default_factory=GrpoConfig)

    def __post_init__(self) -> None:
        one_of(self.name, OBJECTIVE_NAMES, "objective.name")
        positive(self.beta, "objective.beta")
        fraction(self.label_smoothing, "objective.label_smoothing", inclusive_high=False)
        require(self.label_smoothing < 0.5, "objective.label_smoothing",
                "must be below 0.5 (0.5 means the labels carry no preference)", self.label_smoothing)
        # Checked only for the objective that reads them, so dataclasses.replace(objective, name=...)
        # to another objective (as the demo stages do) keeps working.
        if self.name in LOSS_TYPES and self.loss_type:
            one_of(self.loss_type, LOSS_TYPES[self.name], "objective.loss_type")
        require(self.label_smoothing == 0.0 or self.name not in LOSS_TYPES
                or (self.name == "dpo" and self.resolved_loss_type in ("sigmoid", "robust")),
                "objective.label_smoothing", "label smoothing applies to dpo with loss_type sigmoid or robust",
                self.label_smoothing)
        one_of(self.reference, REFERENCE_MODES, "objective.reference")
        fraction(self.safety_ratio, "objective.safety_ratio", inclusive_high=False)

    @property
    def resolved_loss_type(self) -> str:
        """loss_type, or the objective's own default when it is empty."""
        return self.loss_type or LOSS_TYPES.get(self.name, ("",))[0]


@dataclass
class TrainConfig:
    run_name: str = "tiny"
    # An int (a fixed worker count) or [min, max]: elastic training on Ray Train V2 - the run starts
    # once `min` workers fit, grows when nodes join and shrinks when they leave, resuming from the
    # newest checkpoint (DeepSpeed universal checkpoints when the size changes). After validation
    # num_workers is the maximum and min_workers the minimum (0: a fixed count).
    num_workers: Any = 2
    min_workers: int = 0
    # Elastic runs: how often (s) Ray Train looks for room to grow the worker group.
    elastic_resize_interval_s: float = 60.0
    # Extra Ray resources each worker asks for (e.g. {"spot_gpu_slot": 1}) beside CPU/GPU.
    worker_resources: dict[str, float] = field(default_factory=dict)
    # Ask Ray Train whether a node of the run is being preempted (a drain: spot notice, `ray
    # drain-node`, SIGTERM to `ray start --block`) at every this many steps, at most once per
    # preemption_check_interval_s seconds (Ray Train refreshes the answer every 5 s); on a notice
    # every worker checkpoints at that step boundary. 0 -> never ask; interval 0 -> every such step.
    preemption_check_every: int = 1
    preemption_check_interval_s: float = 2.0
    use_gpu: bool = False
    cpus_per_worker: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int = 100
    micro_batch_size: int = 4
    # Global batch = micro_batch_size * num_workers * grad_accum; 0 -> no accumulation.
    global_batch_size: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50
    eval_every: int = 50
    # Where Ray Train keeps run state and checkpoints; empty -> <storage.root>/train.
    storage_path: str = ""
    # Restarts after worker failures; elastic runs with 0 get rayloom.train's default (10).
    max_failures: int = 0
    prefetch_batches: int = 2
    # Peak FLOP/s per worker used for MFU; 0 -> measured at start-up with a matmul probe.
    peak_flops: float = 0.0
    # What a run does when <storage_path>/<run_name> already holds checkpoints: "resume" from the
    # newest complete one (data position included), "overwrite" (delete them, start fresh) or "error".
    on_existing: str = "resume"
    # Checkpoints kept in storage (oldest deleted first); 2 keeps a complete one while the next uploads.
    keep_checkpoints: int = 2
    # Validation micro-batches per evaluation (every eval_every steps and at the end); 0 -> no eval.
    eval_batches: int = 4
    # Adam betas/eps.
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    # At the end, write a standard Hugging Face directory (adapters merged) that vLLM serves;
    # empty export_dir -> <storage.root>/models/<run_name>.
    export: bool = True
    export_dir: str = ""
    # Let the export replace an existing export_dir that rayloom did not write (it is moved aside,
    # never deleted). A committed rayloom model there is replaced without it (older versions kept).
    overwrite: bool = False

    def __post_init__(self) -> None:
        self._normalize_workers()
        positive(self.cpus_per_worker, "train.cpus_per_worker")
        positive(self.lr, "train.lr")
        fraction(self.min_lr_ratio, "train.min_lr_ratio")
        non_negative(self.weight_decay, "train.weight_decay")
        non_negative(self.warmup_steps, "train.warmup_steps")
        positive(self.max_steps, "train.max_steps")
        positive(self.micro_batch_size, "train.micro_batch_size")
        non_negative(self.global_batch_size, "train.global_batch_size")
        if self.global_batch_size:
            for workers in range(self.smallest_workers, self.num_workers + 1):
                per_step = self.micro_batch_size * workers
                require(self.global_batch_size % per_step == 0, "train.global_batch_size",
                        f"must be a multiple of micro_batch_size*num_workers={per_step}"
                        + (f" for every worker count in [{self.min_workers}, {self.num_workers}]"
                           if self.elastic else ""), self.global_batch_size)
        require(self.global_batch_size > 0 or not self.elastic, "train.global_batch_size",
                "elastic training (train.num_workers=[min, max]) needs a fixed global batch: set it to a multiple "
                "of micro_batch_size * every worker count in the range", self.global_batch_size)
        positive(self.elastic_resize_interval_s, "train.elastic_resize_interval_s")
        non_negative(self.preemption_check_every, "train.preemption_check_every")
        non_negative(self.preemption_check_interval_s, "train.preemption_check_interval_s")
        for name, amount in self.worker_resources.items():
            require(name not in ("CPU", "GPU"), "train.worker_resources", "CPU/GPU come from train.cpus_per_worker "
                    "and train.use_gpu", name)
            positive(amount, f"train.worker_resources.{name}")
        non_negative(self.grad_clip, "train.grad_clip")
        positive(self.checkpoint_every, "train.checkpoint_every")
        positive(self.eval_every, "train.eval_every")
        non_negative(self.max_failures, "train.max_failures")
        non_negative(self.prefetch_batches, "train.prefetch_batches")
        non_negative(self.peak_flops, "train.peak_flops")
        one_of(self.on_existing, ("resume", "overwrite", "error"), "train.on_existing")
        positive(self.keep_checkpoints, "train.keep_checkpoints")
        non_negative(self.eval_batches, "train.eval_batches")
        fraction(self.adam_beta1, "train.adam_beta1", inclusive_high=False)
        fraction(self.adam_beta2, "train.adam_beta2", inclusive_high=False)
        positive(self.adam_eps, "train.adam_eps")
        require(self.warmup_steps < self.max_steps or self.warmup_steps == 0, "train.warmup_steps",
                f"must be smaller than train.max_steps={self.max_steps}", self.warmup_steps)
        safe_name(self.run_name, "train.run_name")

    def _normalize_workers(self) -> None:
        """num_workers: an int, or [min, max] -> num_workers=max, min_workers=min."""
        value = self.num_workers
        if isinstance(value, list | tuple):
            require(len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
                    "train.num_workers", "give an int or a [min, max] pair of ints", list(value))
            self.min_workers, self.num_workers = int(value[0]), int(value[1])
        else:
            require(isinstance(value, int) and not isinstance(value, bool), "train.num_workers",
                    "give an int or a [min, max] pair of ints", value)
        positive(self.num_workers, "train.num_workers")
        non_negative(self.min_workers, "train.min_workers")
        require(self.min_workers <= self.num_workers, "train.num_workers",
                f"min {self.min_workers} must not exceed max {self.num_workers}", [self.min_workers, self.num_workers])

    @property
    def elastic(self) -> bool:
        """True when the worker count is a range (Ray Train V2 elastic scaling)."""
        return 0 < self.min_workers < self.num_workers

    @property
    def smallest_workers(self) -> int:
        """The fewest workers the run trains with (num_workers for a fixed count)."""
        return self.min_workers if self.elastic else self.num_workers
