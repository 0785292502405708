"""Option ranking: batched, left-padded, LM head on the option positions only, and still each option's exact mean
log-likelihood; teachers' unforced answers read by ranking."""

import pytest
import torch

from hf_know.purification import generate_rationales
from hf_know.purification.data import task_prompt
from hf_know.purification.generation import answer_prompt
from hf_know.purification.ranking import option_log_likelihoods, rank_options
from hf_know.purification.toy import rationale_texts, tiny_t5, toy_rationale_data, word_tokenizer
from hf_know.testing import tiny_llama


@pytest.fixture(scope="module")
def data():
    rows = toy_rationale_data(16)
    tokenizer = word_tokenizer(rationale_texts(rows), append_eos=False)

    # prompts of different lengths and options of different lengths, so batches really pad
    def vary(row, i):
        distractor = next(j for j, c in enumerate(row["choices"]) if c != row["answer"])
        choices = [c if j != distractor else "one two" for j, c in enumerate(row["choices"])]
        return {"question": row["question"] + " plus one" * i, "choices": choices}

    return rows.select(range(5)).map(vary, with_indices=True), tokenizer


def unbatched(model, tokenizer, row: dict, option: str) -> float:
    """Mean log-likelihood of `option`'s tokens after the answer prompt, one unpadded sequence at a time."""
    prompt = tokenizer(task_prompt("predict: ", row["question"], row["choices"]))["input_ids"]
    if model.config.is_encoder_decoder:
        target = tokenizer(option)["input_ids"]
        logits = model(input_ids=torch.tensor([prompt]), labels=torch.tensor([target])).logits[0]
        return logits.log_softmax(-1)[torch.arange(len(target)), target].mean().item()
    target = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
    ids = prompt + target
    log_probs = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    positions = torch.arange(len(prompt), len(ids))
    return log_probs[positions - 1, torch.tensor(target)].mean().item()


@pytest.mark.parametrize("architecture", ["llama", "t5"])
def test_batched_scores_equal_one_sequence_at_a_time(data, architecture):
    rows, tokenizer = data
    model = (tiny_llama if architecture == "llama" else tiny_t5)(len(tokenizer)).eval()
    scores = option_log_likelihoods(model, tokenizer, rows, batch_size=3)
    with torch.no_grad():
        expected = [[unbatched(model, tokenizer, row, option) for option in row["choices"]] for row in rows]
    assert torch.allclose(torch.tensor(scores), torch.tensor(expected), atol=1e-5)
    best = [row["choices"][int(torch.tensor(s).argmax())] for s, row in zip(expected, rows, strict=True)]
    assert rank_options(scores, rows) == best


def test_generate_rationales_reads_unforced_answers_by_ranking(data):
    rows, tokenizer = data
    rows = rows.select_columns(["id", "question", "choices", "answer"])
    examples = [{**row, "rationale": "because"} for row in toy_rationale_data(8, seed=1)]
    model = tiny_llama(len(tokenizer)).eval()
    built = generate_rationales(rows, {"llama": (model, tokenizer)}, examples, max_new_tokens=3, answers="rank")
    ranked = rank_options(option_log_likelihoods(model, tokenizer, rows, answer_prompt), rows)
    assert [a[0] for a in built["teacher_answers"]] == ranked
    with pytest.raises(ValueError, match="answers='vote'; expected one of"):
        generate_rationales(rows, {"llama": (model, tokenizer)}, examples, answers="vote")
