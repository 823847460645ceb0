"""Preference tuning: what the reference policy costs.

Same model, same LoRA adapter, same batches of demo preference pairs, one process (no Ray, so the
numbers isolate the objective): a LoRA DPO optimizer step with the reference obtained by disabling
the adapter (rayloom's default) vs an explicit frozen copy, and ORPO (no reference) and plain SFT
on the chosen side as the floors. Reported: step time and the parameter memory each one holds.
"""

from __future__ import annotations

import dataclasses

from harness import Result, repeat

DESCRIPTION = "LoRA DPO step: reference by disabling the adapter vs a frozen copy (time, parameter memory)"


def _pairs(model_dir, num: int, seq_len: int) -> dict:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from rayloom.data.demo_corpus import preference_records
    from rayloom.data.packing import pad_preference

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    sides = {"chosen": [], "rejected": []}
    for record in preference_records(num):
        for side in sides:
            messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record[side]}]
            enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
            sides[side].append((np.asarray(enc["input_ids"][:seq_len], np.int32),
                                np.asarray(enc["assistant_masks"][:seq_len], np.int8)))
    table, _ = pad_preference([c[0] for c in sides["chosen"]], [c[1] for c in sides["chosen"]],
                              [r[0] for r in sides["rejected"]], [r[1] for r in sides["rejected"]], seq_len,
                              tok.pad_token_id)
    return {name: torch.tensor(table.column(name).to_pylist()) for name in table.column_names}


def _param_bytes(*modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def run(quick: bool = False) -> Result:
    import torch

    from rayloom.align.preference import PreferenceRun
    from rayloom.config import compose
    from rayloom.models import load_model, resolve_model_dir
    from rayloom.models.peft_wrap import wrap_with_peft

    torch.set_num_threads(1)
    preset = "tiny-2l" if quick else "tiny"
    cfg = compose("train", [f"model={preset}", "objective=dpo", "peft=lora", "peft.dropout=0.0"])
    model_dir = resolve_model_dir(cfg.model)
    batch = _pairs(model_dir, 8, 64)
    rows = []
    for system, objective in (("dpo, reference = adapter disabled", dataclasses.replace(cfg.objective, reference="auto")),
                              ("dpo, reference = frozen copy", dataclasses.replace(cfg.objective, reference="copy")),
                              ("orpo (no reference)", dataclasses.replace(cfg.objective, name="orpo", loss_type="")),
                              ("sft on the chosen side", None)):
        torch.manual_seed(0)
        model = wrap_with_peft(load_model(model_dir), cfg.peft)
        held = [model]
        if objective is None:
            lm = {"input_ids": batch["chosen_input_ids"], "attention_mask": batch["chosen_attention_mask"],
                  "labels": batch["chosen_labels"]}

            def loss_fn(model=model, lm=lm):
                return model(**lm, use_cache=False).loss
        else:
            run_state = PreferenceRun(dataclasses.replace(cfg, objective=objective))
            if objective.reference == "copy" and objective.name == "dpo":
                # The worker wraps this copy in a DeepSpeed inference engine; one process needs no wrapper.
                run_state.reference = load_model(model_dir).eval().requires_grad_(False)
                held.append(run_state.reference)

            def loss_fn(model=model, run_state=run_state):
                return run_state.loss_sum(model, batch) / batch["chosen_input_ids"].shape[0]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(loss_fn=loss_fn, optimizer=optimizer):
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        timing = repeat(step, repeats=3 if quick else 8, warmup=1)
        rows.append({"system": system, "step_ms": 1000 * timing["median_s"],
                     "param_mib": _param_bytes(*held) / 2**20})
    by = {r["system"]: r for r in rows}
    disabled, copy = by["dpo, reference = adapter disabled"], by["dpo, reference = frozen copy"]
    ratios = {
        "frozen copy / adapter disabled (parameter memory)": copy["param_mib"] / disabled["param_mib"],
        "frozen copy / adapter disabled (step time)": copy["step_ms"] / disabled["step_ms"],
        "dpo (adapter disabled) / sft (step time)": disabled["step_ms"] / by["sft on the chosen side"]["step_ms"],
    }
    return Result(name="align", description=DESCRIPTION, rows=rows, ratios=ratios,
                  goals={"frozen copy / adapter disabled (parameter memory)": "~2 (the copy is what LoRA saves)"},
                  notes=[f"model {preset}, LoRA r={cfg.peft.r} on q/k/v/o, 8 pairs x 64 tokens per side, 1 thread, "
                         "plain torch (no Ray / DeepSpeed) so only the objective differs.",
                         "A DPO step runs the policy forward+backward and a no-grad reference forward on both sides "
                         "(2 x rows); SFT runs one side only."])
