"""A synthetic multi-teacher rationale set, a word-level tokenizer and tiny students built from configs: the toy
recipe of `hf-know purify` (`dataset_name: toy`), tests and the demo, with no downloads.

Questions are "what is a plus b ?" or "what is a times b ?". Teacher `adder` adds in both cases and teacher
`multiplier` multiplies, each writing a rationale for its own (unforced) answer: each is right on one kind of
question, so a router can learn from the question alone which teacher to trust. Every 8th row `multiplier` has no
rationale (a missing rationale is skipped, not an error).
"""

from __future__ import annotations

import random

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from .data import RATIONALE_FEATURES
from .encoder import SentenceEncoder

TOY_TEACHERS = ("adder", "multiplier")
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
WORD_TOKENIZER_IDS = {"pad_token_id": 0, "eos_token_id": 1}  # the ids `word_tokenizer` gives SPECIAL_TOKENS


def toy_rationale_data(n: int = 64, seed: int = 0) -> Dataset:
    """`n` rows in the rationale schema (see the module docstring)."""
    rng = random.Random(seed)
    rows = {name: [] for name in RATIONALE_FEATURES}
    for i in range(n):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        op = "plus" if i % 2 == 0 else "times"
        results = {"adder": a + b, "multiplier": a * b}
        gold = str(results["adder" if op == "plus" else "multiplier"])
        choices = list(dict.fromkeys([str(a + b), str(a * b), str(a + b + 1), str(a * b + 2), str(a + b + 3)]))[:4]
        rng.shuffle(choices)
        words = {"adder": "add", "multiplier": "multiply"}
        rationales = [
            f"we {words[t]} {a} and {b} to get {results[t]} so the answer is {results[t]}" for t in TOY_TEACHERS
        ]
        if i % 8 == 7:
            rationales[1] = ""
        values = {
            "id": f"toy-{i}",
            "question": f"what is {a} {op} {b} ?",
            "choices": choices,
            "answer": gold,
            "rationales": rationales,
            "teacher_answers": [str(results[t]) for t in TOY_TEACHERS],
            "stated_answers": [str(results[t]) if r else "" for t, r in zip(TOY_TEACHERS, rationales, strict=True)],
        }
        for name, value in values.items():
            rows[name].append(value)
    return Dataset.from_dict(rows, features=RATIONALE_FEATURES)


def word_tokenizer(texts: list[str], append_eos: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of `texts` (plus task-prefix words), appending `</s>` like T5's
    (`append_eos=True`, for encoder-decoder students) or not (for causal students, whose trainer adds it)."""
    extra = ["predict", "explain", "answer", "choices", "(", ")", ":", "a", "b", "c", "d", "e"]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    splitter = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    for text in [*texts, " ".join(extra)]:
        for word, _ in splitter.pre_tokenize_str(text.lower()):
            vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = splitter
    if append_eos:
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def rationale_texts(dataset: Dataset) -> list[str]:
    """Every text of a rationale dataset, to build a `word_tokenizer` from."""
    return [
        *dataset["question"],
        *(c for row in dataset["choices"] for c in row),
        *(r for row in dataset["rationales"] for r in row),
    ]


def tiny_t5(vocab_size: int, d_model: int = 32) -> T5ForConditionalGeneration:
    """A one-layer T5 encoder-decoder (pad 0, eos 1: the `word_tokenizer` ids)."""
    layout = {"d_kv": 8, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 4, "decoder_start_token_id": 0}
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_ff=2 * d_model, **layout, **WORD_TOKENIZER_IDS)
    return T5ForConditionalGeneration(config)


def tiny_llama_student(vocab_size: int, hidden_size: int = 32) -> LlamaForCausalLM:
    """A two-layer Llama decoder LM (pad 0, eos 1: the `word_tokenizer` ids)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=1,
        **WORD_TOKENIZER_IDS,
    )
    return LlamaForCausalLM(config)


def tiny_sentence_encoder(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 32) -> SentenceEncoder:
    """A randomly initialised two-layer BERT as a `SentenceEncoder`."""
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        pad_token_id=0,
    )
    return SentenceEncoder(BertModel(config), tokenizer)
