"""What the optimizer is given: parameter groups (weight decay) and the learning-rate schedule."""

from __future__ import annotations

from rayloom.config import TrainConfig


def param_groups(model, weight_decay: float) -> list[dict]:
    """Trainable parameters; no weight decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_lr_scheduler(optimizer, train: TrainConfig):
    """Linear warmup then cosine decay to lr * min_lr_ratio at max_steps (transformers' schedule)."""
    # transformers is heavy; the driver imports this module without needing it.
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps=train.warmup_steps,
                                                       num_training_steps=train.max_steps,
                                                       min_lr_rate=train.min_lr_ratio)
