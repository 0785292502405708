"""Option ranking: a model's answer to a multiple-choice question is the option whose text has the highest mean token
log-likelihood as the completion of the prompt. No generation and no parsing, so it measures small students more
finely than exact match, and gives a small teacher's own unforced answer (`teacher_answers`) where free text would
often name no option."""

from __future__ import annotations

from collections.abc import Callable

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.utils import pad

from .data import task_prompt


@torch.no_grad()
def option_log_likelihoods(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset | list[dict],
    prompt: Callable[[dict], str] | None = None,
    batch_size: int = 32,
    max_prompt_length: int = 256,
) -> list[list[float]]:
    """Per row, the mean log-likelihood of each option's tokens as the completion of `prompt(row)` (by default the
    answer task's prompt `task_prompt("predict: ", ...)`), for causal and encoder-decoder models alike.

    Prompt and option are tokenized apart and joined (a causal model's option after a space, without special
    tokens), so every option is scored on the same prompt tokens; long prompts keep their last `max_prompt_length`
    tokens (the options and the cue sit at the end). Pairs run in batches of similar length; a causal model's
    batches are left-padded and its LM head runs on the option positions only.
    """
    prompt = prompt or (lambda row: task_prompt("predict: ", row["question"], row["choices"]))
    causal = not model.config.is_encoder_decoder
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    space = " " if causal else ""
    pairs = []  # ((row, option), prompt ids, option ids)
    for i, row in enumerate(dataset):
        source = tokenizer(prompt(row))["input_ids"][-max_prompt_length:]
        for j, option in enumerate(row["choices"]):
            pairs.append(((i, j), source, tokenizer(space + option, add_special_tokens=not causal)["input_ids"]))
    pairs.sort(key=lambda pair: len(pair[1]) + len(pair[2]))
    scores = [[0.0] * len(row["choices"]) for row in dataset]
    device = model.device
    model.eval()
    for start in tqdm(range(0, len(pairs), batch_size), desc="option ranking", disable=len(pairs) <= batch_size):
        chunk = pairs[start : start + batch_size]
        if causal:
            keep = max(len(t) for *_, t in chunk) + 1
            mask = _tensors([[1] * (len(s) + len(t)) for _, s, t in chunk], 0, device, "left")
            logits = model(
                input_ids=_tensors([s + t for _, s, t in chunk], pad_id, device, "left"),
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                logits_to_keep=keep,
            ).logits[:, :-1]
            labels = _tensors([[-100] * len(s) + t for _, s, t in chunk], -100, device, "left")[:, -keep + 1 :]
        else:
            labels = _tensors([t for *_, t in chunk], -100, device)
            mask = _tensors([[1] * len(s) for _, s, _ in chunk], 0, device)
            inputs = _tensors([s for _, s, _ in chunk], pad_id, device)
            logits = model(input_ids=inputs, attention_mask=mask, labels=labels).logits
        token_nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
        mean = -(token_nll.sum(1) / (labels != -100).sum(1).clamp(min=1))
        for ((row, option), *_), value in zip(chunk, mean.tolist(), strict=True):
            scores[row][option] = value
    return scores


def rank_options(scores: list[list[float]], dataset: Dataset | list[dict]) -> list[str]:
    """Per row, the option text with the highest score."""
    return [row["choices"][max(range(len(s)), key=s.__getitem__)] for s, row in zip(scores, dataset, strict=True)]


def _tensors(sequences: list[list[int]], value: int, device, side: str = "right") -> torch.Tensor:
    return pad([torch.tensor(s) for s in sequences], value, side).to(device)
