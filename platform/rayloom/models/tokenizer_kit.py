"""An offline-trained byte-level BPE tokenizer with a chat template.

Trained with the `tokenizers` library on text that ships with CPython (pydoc's help topics) plus
generated numbers, so nothing is downloaded. The chat template marks assistant content with
`{% generation %}` so `apply_chat_template(..., return_assistant_tokens_mask=True)` yields the
loss mask that SFT uses; serving renders the same template from the saved tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# End of a chat turn; also the token that stops generation.
END_OF_TURN = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, END_OF_TURN, *ROLE_TOKENS)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    # transformers renders chat templates with trim_blocks, which would eat a literal newline right
    # after `{% endgeneration %}`; an expression keeps assistant turns shaped like the others.
    "<|assistant|>\n{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def offline_corpus() -> Iterator[str]:
    """Text available on any Python install: pydoc's topics, plus numbers and arithmetic."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]
    yield " ".join(str(i) for i in range(1000))
    for a in range(0, 100, 7):
        yield " ".join(f"{a} + {b} = {a + b}. {a} - {b} = {a - b}." for b in range(0, 100, 3))


def train_tokenizer(vocab_size: int, split_digits: bool = False):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer; with
    split_digits every digit is a token of its own (no merges across digits)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                               if split_digits else byte_level)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(offline_corpus(), trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # Plain-text encodes start with BOS (as Llama's do); the chat template writes its own BOS and
    # chat encodes use add_special_tokens=False, so a conversation gets exactly one.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=END_OF_TURN,
        pad_token=PAD,
        additional_special_tokens=[EOS, *ROLE_TOKENS],
        chat_template=CHAT_TEMPLATE,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )
