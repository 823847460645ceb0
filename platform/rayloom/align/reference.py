"""The reference policy's forward pass, shared by the preference objectives and GRPO."""

from __future__ import annotations

from contextlib import nullcontext


def unwrap(model):
    """The peft model inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def reference_forward(model, inputs: dict, reference, disable_adapter: bool):
    """Outputs of the reference policy: a frozen copy when there is one; otherwise the policy itself
    with its LoRA adapter switched off (peft: that is the starting model)."""
    if reference is not None:
        return reference(**inputs)
    with unwrap(model).disable_adapter() if disable_adapter else nullcontext():
        return model(**inputs)
