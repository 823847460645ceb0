"""Config checks that span groups, run before any worker starts (each group's own values are
checked while composing)."""

from __future__ import annotations

from rayloom.config import RayloomConfig
from rayloom.errors import UserError
from rayloom.models.peft_wrap import check_peft_supported
from rayloom.train.ds_config import build_batch_geometry
from rayloom.train.objectives import objective_builder


def check_config(cfg: RayloomConfig) -> None:
    """Fail naming the key, for combinations no single group can see, and for an objective no
    imported package provides."""
    objective_builder(cfg.objective.name)
    ds, train, peft = cfg.deepspeed, cfg.train, cfg.peft
    for workers in range(train.smallest_workers, train.num_workers + 1):  # every size an elastic run may take
        build_batch_geometry(train, ds, workers)
    if train.elastic:
        check_elastic_supported(cfg)
    if ds.precision == "fp16" and not train.use_gpu:
        raise UserError("invalid config value deepspeed.precision='fp16': fp16 mixed precision needs GPUs "
                        "(train.use_gpu=true); on CPU use bf16 or fp32")
    check_peft_supported(peft, train.use_gpu)
    if peft.method == "qlora" and ds.zero_stage == 3:
        raise UserError("invalid config value deepspeed.zero_stage=3: QLoRA's 4-bit base cannot be partitioned by "
                        "ZeRO-3; use deepspeed=zero2 with peft=qlora")
    if peft.method != "none" and ds.tensor_parallel_size > 1:
        raise UserError("invalid config value deepspeed.tensor_parallel_size="
                        f"{ds.tensor_parallel_size}: AutoTP shards plain Linear layers, not peft's adapter "
                        "layers; use peft=none with AutoTP, or ZeRO for PEFT runs")
    if train.use_gpu and ds.offload_optimizer == "nvme" and not ds.nvme_path:
        raise UserError("deepspeed.nvme_path is required for nvme offload")


def check_elastic_supported(cfg: RayloomConfig) -> None:
    """What elastic runs (train.num_workers=[min, max]) cannot combine with, named before Ray starts."""
    ds = cfg.deepspeed
    if "nvme" in (ds.offload_optimizer, ds.offload_param):
        raise UserError("elastic training (train.num_workers=[min, max]) resumes at a new size through DeepSpeed "
                        "universal checkpoints, which do not support NVMe offload: use deepspeed.offload_optimizer"
                        "/offload_param=cpu or none, or a fixed train.num_workers")
    if ds.tensor_parallel_size > 1:
        raise UserError("elastic training (train.num_workers=[min, max]) is not combined with AutoTP tensor "
                        "parallelism (deepspeed.tensor_parallel_size>1): its checkpoints cannot change world size")
    if cfg.peft.method != "none" and ds.zero_stage >= 1:
        raise UserError("elastic training (train.num_workers=[min, max]) of PEFT runs under ZeRO 1-3 is not "
                        "supported: their checkpoints omit the frozen base weights, which DeepSpeed's universal "
                        "conversion needs; use deepspeed=zero0 (whole state on every rank) or a fixed num_workers")
