"""`rayloom export`: turn a training checkpoint (or a peft adapter) into a standard Hugging Face
directory that transformers loads and vLLM serves.

Three sources, one output:
  * a final checkpoint holding `model/` (full training): copied as is;
  * a checkpoint holding `adapter/` (PEFT), or `--adapter DIR`: the adapter is merged into the base;
  * any other complete checkpoint: DeepSpeed's files are consolidated (zero_to_fp32 for ZeRO 1-3,
    the module state for ZeRO-0), PEFT weights merged, and saved.
The output is published with storage.commit_dir (local or s3://, a `_COMMITTED` marker last).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from rayloom import storage
from rayloom.errors import UserError
from rayloom.train import checkpoints as ckpts
from rayloom.train.safe_load import check_checkpoint_files, safe_torch_load

log = logging.getLogger(__name__)


def resolve_checkpoint(uri: str) -> str:
    """A complete checkpoint URI from a checkpoint or a run directory (newest complete checkpoint)."""
    uri = uri.rstrip("/")
    if ckpts.parse_step(uri.rsplit("/", 1)[-1]) is not None:
        if not ckpts.is_complete(uri):
            raise UserError(f"checkpoint {uri} is incomplete (no {ckpts.MARKER} marker): a worker stopped before it "
                            "was fully written, so it is never loaded; export an earlier one or the run directory")
        return uri
    newest = ckpts.latest_complete(uri)
    if newest is None:
        raise UserError(f"{uri} is neither a checkpoint nor a run directory with a complete checkpoint")
    return newest[1]


def consolidate_deepspeed(ds_dir: Path, state: ckpts.TrainerState, base_model_dir: str | Path, peft_dir: Path | None):
    """A Hugging Face model with the weights of a DeepSpeed checkpoint (adapters merged)."""
    import torch
    from transformers import AutoModelForCausalLM

    if state.tensor_parallel_size > 1:
        raise UserError("this checkpoint was trained with AutoTP tensor parallelism; its weights are sharded by "
                        "layer slices that only the final checkpoint's consolidated model/ holds: export the run's "
                        "final checkpoint")
    if state.zero_stage == 0:
        files = sorted((ds_dir / state.ds_tag).glob("mp_rank_00_model_states.pt"))
        if not files:
            raise UserError(f"{ds_dir / state.ds_tag} holds no DeepSpeed model states")
        state_dict = safe_torch_load(files[0])["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # zero_to_fp32 unpickles with weights_only=False: scan the files for code first.
        check_checkpoint_files(ds_dir / state.ds_tag)
        state_dict = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=state.ds_tag)
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=getattr(torch, state.model_dtype))
    if peft_dir is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig.from_pretrained(str(peft_dir)))
        # Frozen base weights were not saved (they are the base model's); every adapter weight must load.
        result = model.load_state_dict(state_dict, strict=False)
        adapter_missing = [k for k in result.missing_keys if "lora_" in k]
        if adapter_missing or result.unexpected_keys:
            raise UserError(f"the checkpoint's adapter weights do not fit the base model {base_model_dir}: missing "
                            f"{adapter_missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return model.merge_and_unload()
    model.load_state_dict(state_dict, strict=True)
    return model


def export_checkpoint(checkpoint_uri: str, out_uri: str, base_model_dir: str | Path | None = None, *,
                      root: str | None = None, overwrite: bool = False) -> str:
    """Write the HF directory for a complete checkpoint to `out_uri`; returns `out_uri`.

    `out_uri` may not be the storage `root`, the checkpoint or a folder above either, and an existing
    `out_uri` that is not a committed rayloom model is refused unless `overwrite` (then it is moved
    aside, never deleted; storage.commit_dir)."""
    from rayloom.models.peft_wrap import copy_side_files, merge_adapter

    checkpoint_uri = resolve_checkpoint(checkpoint_uri)
    storage.check_output_path(out_uri, inputs=[checkpoint_uri], root=root, what="export output")
    storage.check_writable(out_uri, kind="model", overwrite=overwrite)
    state = ckpts.read_state(checkpoint_uri)
    base = str(base_model_dir or state.base_model)
    with storage.local_copy(storage.resolve_committed(checkpoint_uri, "checkpoint")) as local, tempfile.TemporaryDirectory(prefix="rayloom-export-") as tmp:
        local = Path(local)
        out = Path(tmp) / "model"
        if (local / ckpts.MODEL_DIR / "config.json").is_file():
            source = local / ckpts.MODEL_DIR
        elif (local / ckpts.ADAPTER_DIR / "adapter_config.json").is_file():
            _require_base(base)
            source = merge_adapter(base, local / ckpts.ADAPTER_DIR, out, state.model_dtype)
        else:
            _require_base(base)
            peft_dir = local / ckpts.PEFT_CONFIG_DIR if state.peft_method != "none" else None
            model = consolidate_deepspeed(local / ckpts.DS_DIR, state, base, peft_dir)
            model.save_pretrained(out)
            copy_side_files(base, out)
            source = out
        storage.commit_dir(source, out_uri, kind="model", overwrite=overwrite)
    log.info("exported %s -> %s", checkpoint_uri, out_uri)
    return out_uri if storage.is_s3(out_uri) else str(Path(out_uri).resolve())


def _require_base(base: str) -> None:
    if not base or not (Path(base) / "config.json").is_file():
        raise UserError(f"the base model directory {base!r} is not available here; pass --base DIR (the Hugging "
                        "Face directory the run started from)")


def add_export_command(commands) -> argparse.ArgumentParser:
    """Add `rayloom export` to the rayloom CLI's sub-commands (rayloom.cli builds the tree)."""
    parser = commands.add_parser(
        "export",
        help="merge LoRA adapters / consolidate a checkpoint into a Hugging Face directory vLLM serves",
        description="Merge LoRA adapters / consolidate a DeepSpeed checkpoint into a Hugging Face directory "
                    "that transformers loads and vLLM serves.",
        epilog="examples:\n  rayloom export runs/train/tiny --out runs/models/tiny\n"
               "  rayloom export runs/train/tiny/checkpoint_00000050_ab12cd --out /tmp/step50\n"
               "  rayloom export --adapter runs/adapters/x --base ~/.cache/rayloom/models/tiny-... --out merged/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", nargs="?", help="a checkpoint directory, or a run directory (its newest complete "
                                                  "checkpoint); local or s3://")
    parser.add_argument("--out", required=True, help="output directory (local or s3://)")
    parser.add_argument("--base", help="base model HF directory (default: the one recorded in the checkpoint)")
    parser.add_argument("--adapter", help="merge this peft adapter directory into --base instead")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --out that rayloom did not write (it is moved aside, not deleted)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="weights dtype for --adapter merges")
    parser.set_defaults(run=run_export)
    return parser


def export_main(argv: list[str]) -> int:
    """`rayloom export ARGV...`; usage mistakes return 2 (argparse's code), --help 0."""
    parser = add_export_command(argparse.ArgumentParser(prog="rayloom").add_subparsers())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    return run_export(args)


def run_export(args: argparse.Namespace) -> int:
    if bool(args.source) == bool(args.adapter):
        raise UserError("give either a checkpoint/run directory or --adapter DIR (with --base)")
    if args.adapter:
        from rayloom.models.peft_wrap import merge_adapter

        if not args.base:
            raise UserError("--adapter needs --base (the model the adapter was trained on)")
        _require_base(args.base)
        with storage.local_copy(args.adapter) as adapter, tempfile.TemporaryDirectory() as tmp:
            merged = merge_adapter(args.base, adapter, Path(tmp) / "model", args.dtype)
            storage.check_output_path(args.out, inputs=[args.adapter, args.base], what="--out")
            storage.commit_dir(merged, args.out, kind="model", overwrite=args.force)
        print(f"exported {args.out}")
        return 0
    out = export_checkpoint(args.source, args.out, base_model_dir=args.base, overwrite=args.force)
    print(f"exported {out}")
    return 0
