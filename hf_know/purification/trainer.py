"""The purified-distillation trainers (knowledge purification, arXiv 2602.01064): trl's `SFTTrainer` for causal
students, `Seq2SeqTrainer` for encoder-decoder ones, sharing the purification and the objective.

Both take rationale data (`hf_know.purification.data` schema), purify it (a `Purifier`, or an RL `selector` trained
jointly), turn each question into an answer and rationale prompt-completion examples (`distillation.py`), and train
on completion tokens only, rationale tokens weighted by λ. Evaluation runs the trainer's own loop on the answer task:
`eval_loss` is the answer NLL and `eval_answer_accuracy` its exact match (an answer counts when every token is the
top-1 prediction under teacher forcing, which is exactly when greedy decoding generates it).

One module of about 350 lines: both trainers and their collators share the mixin and the per-token extras.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Seq2SeqTrainer
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import pad

from .config import PurifiedDistillConfig, PurifiedSeq2SeqDistillConfig
from .data import validate_rationale_data
from .distillation import (
    ANSWER,
    EXAMPLE_COLUMNS,
    RATIONALE,
    SelectorStep,
    answer_examples,
    distillation_examples,
    example_token_weights,
    per_example_mean,
)
from .purifier import Purifier
from .purifiers.reinforce import ReinforceSelector

IGNORE_INDEX = -100
# Batch entries the collators add for the objective; the trainers take them out before the forward.
DISTILLATION_KEYS = ("loss_weights", "example_index", "example_task", "example_row")
CITATION = """\
@article{knowledge_purification_2026,
    title   = {{Knowledge Purification in Multi-Teacher Knowledge Distillation for LLMs}},
    journal = {arXiv preprint arXiv:2602.01064},
    year    = 2026,
}"""


def token_extras(examples: list[dict], lengths: list[int], rationale_weight: float, flatten: bool, multiple):
    """Per token its loss weight and its example's position in the batch (flattened for padding-free batches), and
    per example its task and question."""
    weights = example_token_weights(examples, lengths, rationale_weight)
    index = [torch.full((n,), i) for i, n in enumerate(lengths)]
    if flatten:
        weights, index = [torch.cat(weights)], [torch.cat(index)]
    return {
        "loss_weights": pad(weights, 0.0, "right", multiple),
        "example_index": pad(index, -1, "right", multiple),
        "example_task": torch.tensor([e["task"] for e in examples]),
        "example_row": torch.tensor([e["row"] for e in examples]),
    }


@dataclass
class DistillationCollator(DataCollatorForLanguageModeling):
    """trl's language-modeling collator plus the objective's per-token weights; with an RL selector it first drops
    the rationales the policy did not choose for their question."""

    rationale_weight: float = 1.0
    select: Callable[[list[dict]], list[dict]] | None = None  # SelectorStep.select

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "task" not in examples[0]:  # packed sequences mix examples (rationale_weight is then 1)
            return super().torch_call(examples)
        if self.select is not None:
            examples = self.select(examples)
        batch = super().torch_call(examples)
        lengths = [len(example["input_ids"]) for example in examples]
        extras = token_extras(examples, lengths, self.rationale_weight, self.padding_free, self.pad_to_multiple_of)
        return {**batch, **extras}


class _PurifiedDistillation:
    """The part both trainers share: rationale data in, examples out; the selector's step and answer exact match
    after every forward."""

    _tag_names = ["hf-know", "knowledge-purification", "distillation"]
    _paper = {
        "title": "Knowledge Purification in Multi-Teacher Knowledge Distillation for LLMs",
        "id": "2602.01064",
        "citation": CITATION,
    }

    _config_class: type

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: PurifiedDistillConfig | PurifiedSeq2SeqDistillConfig,
        train_dataset: Dataset,
        eval_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        *,
        teachers: list[str] | None = None,
        purifier: Purifier | None = None,
        selector: ReinforceSelector | None = None,
        **kwargs,
    ):
        if not isinstance(args, self._config_class):
            raise TypeError(f"args must be a {self._config_class.__name__}, got {type(args).__name__}.")
        self._check_student(model, args, processing_class, selector)
        train, evaluation = self._prepare_distillation(args, train_dataset, eval_dataset, teachers, purifier, selector)
        select = self.selector_step.select if self.selector_step is not None else None
        self._init_trainer(model, args, train, evaluation, processing_class, select, kwargs)

    def _check_student(self, model, args, processing_class, selector) -> None:
        """Refuse a student, tokenizer or option this trainer cannot train."""
        raise NotImplementedError

    def _init_trainer(self, model, args, train, evaluation, processing_class, select, kwargs: dict) -> None:
        """Build the underlying trainer on the distillation examples, with a collator that keeps `select`'s
        choice."""
        raise NotImplementedError

    def _prepare_distillation(self, args, train_dataset, eval_dataset, teachers, purifier, selector):
        """(train examples, eval examples); validates the data and purifies it where needed."""
        teachers = teachers or getattr(selector or purifier, "teachers", None)
        self.data_report = validate_rationale_data(train_dataset, teachers)
        self.teachers = self.data_report.teachers
        if eval_dataset is not None:
            validate_rationale_data(eval_dataset, self.teachers)
        for component in (purifier, selector):
            if getattr(component, "teachers", self.teachers) != self.teachers:
                raise ValueError(
                    f"{type(component).__name__} routes among {component.teachers}, but the data has "
                    f"teachers {self.teachers}."
                )
        if selector is not None and args.distill_mode != "purified":
            raise ValueError(
                f"An RL selector purifies while training: use distill_mode='purified', not {args.distill_mode!r}."
            )
        needs_rationale = args.distill_mode == "purified" and selector is None
        if needs_rationale and "rationale" not in train_dataset.column_names:
            if purifier is None:
                raise ValueError("distill_mode='purified' needs a 'rationale' column in train_dataset or a purifier.")
            train_dataset = purifier.purify(train_dataset)
        self.rationale_data, self._answer_results = train_dataset, None
        self.selector_step = (
            SelectorStep(selector, train_dataset, args.policy_learning_rate, args.seed)
            if selector is not None
            else None
        )
        train = distillation_examples(train_dataset, args, self.teachers, selector=selector is not None)
        return train, answer_examples(eval_dataset, args) if eval_dataset is not None else None

    def _after_forward(self, extras: dict, token_nll, correct, mask, example_index) -> None:
        """RL selector step (training) or answer exact match (evaluation), from per-token results aligned with
        `example_index`."""
        task = extras["example_task"].to(token_nll.device)
        if self.model.training:
            if self.selector_step is not None:
                nll = per_example_mean(token_nll, mask, example_index, len(task))
                rationale = task == RATIONALE
                self.selector_step.update(extras["example_row"][rationale.cpu()], nll[rationale], self.accelerator)
            return
        if self._answer_results is None:  # a forward outside the evaluation loop
            return
        wrong = per_example_mean((~correct).float(), mask, example_index, len(task))
        right = (wrong == 0)[task == ANSWER].float()  # an answer is right when no token of it is wrong
        self._answer_results.append(self.accelerator.gather_for_metrics(right).cpu())

    def _set_signature_columns_if_needed(self):
        """Keep each example's task, teacher and question through `remove_unused_columns`."""
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *EXAMPLE_COLUMNS]

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        """The trainer's loop, plus `<prefix>_answer_accuracy` (evaluate and predict alike)."""
        self._answer_results = []
        try:
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        finally:
            results, self._answer_results = self._answer_results, None
        right = torch.cat(results) if results else torch.empty(0)
        if len(right):
            output.metrics[f"{metric_key_prefix}_answer_accuracy"] = right.mean().item()
        return output


class PurifiedDistillTrainer(_PurifiedDistillation, SFTTrainer):
    """A `trl.SFTTrainer` that distils purified teacher rationales into a causal LM student.

    Everything `SFTTrainer` offers keeps working (`peft_config` for a LoRA student, chat templates, padding-free
    batches, gradient checkpointing, `compute_metrics`, `evaluate`, `predict`, `push_to_hub` with trl's model card);
    the card is tagged `hf-know`, `knowledge-purification` and cites the paper.

    Args:
        model: the student (a causal LM, a Hub id or a local folder); encoder-decoder students use
            [`PurifiedSeq2SeqDistillTrainer`].
        args: a [`PurifiedDistillConfig`].
        train_dataset: rationale data. In `"purified"` mode it has a `rationale` column already or `purifier`
            makes one.
        eval_dataset: rationale data (only `question`, `choices`, `answer` are used): the answer task.
        processing_class: the student's tokenizer (loaded from `model` if omitted).
        teachers: teacher names, in the order of `rationales` (default: the purifier's or selector's).
        purifier: any `Purifier`, applied to `train_dataset` when it has no `rationale` column.
        selector: a `ReinforceSelector` trained jointly with the student (REINFORCE, reward -L_DL).
        **kwargs: `SFTTrainer`'s (`peft_config`, `compute_metrics`, `callbacks`, ...).
    """

    _tag_names = ["trl", "sft", *_PurifiedDistillation._tag_names]
    _name = "Purified distillation"
    _config_class = PurifiedDistillConfig

    def _check_student(self, model, args, processing_class, selector) -> None:
        if isinstance(model, PreTrainedModel) and model.config.is_encoder_decoder:
            raise ValueError(
                f"{type(model).__name__} is an encoder-decoder model: use PurifiedSeq2SeqDistillTrainer with a "
                "PurifiedSeq2SeqDistillConfig for it."
            )
        if selector is not None and args.packing:
            raise ValueError("An RL selector chooses rationales per question, which packing mixes: set packing=False.")

    def _init_trainer(self, model, args, train, evaluation, processing_class, select, kwargs: dict) -> None:
        SFTTrainer.__init__(
            self, model, args, train_dataset=train, eval_dataset=evaluation, processing_class=processing_class, **kwargs
        )
        collator = self.data_collator
        if not isinstance(collator, DataCollatorForLanguageModeling):
            raise TypeError(f"PurifiedDistillTrainer builds on trl's language-modeling collator, got {collator!r}.")
        self.data_collator = DistillationCollator(
            **asdict(collator), rationale_weight=args.rationale_weight, select=select
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """SFT's loss, with each completion token's log-probability weighted by its task (through a hook on the
        fused LM head's outputs for the length of the call); then the RL selector's step or the answer accuracy."""
        extras = {key: inputs.pop(key) for key in DISTILLATION_KEYS if key in inputs}
        if not extras:  # packed batches carry no tasks
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        captured: dict[str, torch.Tensor] = {}
        hook = functools.partial(_weigh_log_probs, extras["loss_weights"], captured)
        handle = self.model.register_forward_hook(hook, with_kwargs=True)
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
        if captured:  # a fused forward ran (not, e.g., under a custom compute_loss_func)
            index = extras["example_index"][:, 1:].to(captured["token_nll"].device)  # aligned with next-token labels
            self._after_forward(extras, captured["token_nll"], captured["correct"], captured["mask"], index)
        return result


def _weigh_log_probs(loss_weights: torch.Tensor, captured: dict, module, args, kwargs, output):
    """Forward hook on a causal student: on the fused LM head's outputs (SFT's loss is the negated sum of their
    `log_probs` over the token count), weight each token's log-probability, and keep the unweighted per-token NLL,
    top-1 hits and label mask in `captured`."""
    if not kwargs.get("fused_lm_head"):
        return output
    weights = loss_weights[:, 1:].to(output.log_probs)  # aligned with the next-token labels
    if weights.shape != output.log_probs.shape:
        raise ValueError(
            f"Per-token log-probabilities of shape {tuple(output.log_probs.shape)} do not match the batch's "
            f"{tuple(weights.shape)}: prompt-learning PEFT methods add tokens, which task weights cannot follow."
        )
    captured["token_nll"] = -output.log_probs.detach()
    captured["correct"], captured["mask"] = output.is_top1.bool(), output.label_mask.bool()
    output.log_probs = output.log_probs * weights
    return output


@dataclass
class Seq2SeqDistillationCollator:
    """Pads prompts and completions of encoder-decoder examples, plus the objective's per-token weights; with an RL
    selector it first drops the rationales the policy did not choose."""

    pad_token_id: int
    rationale_weight: float = 1.0
    select: Callable[[list[dict]], list[dict]] | None = None  # SelectorStep.select

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.select is not None:
            examples = self.select(examples)
        inputs = [torch.tensor(example["input_ids"]) for example in examples]
        labels = [torch.tensor(example["labels"]) for example in examples]
        lengths = [len(label) for label in labels]
        return {
            "input_ids": pad(inputs, self.pad_token_id),
            "attention_mask": pad([torch.ones_like(ids) for ids in inputs], 0),
            "labels": pad(labels, IGNORE_INDEX),
            **token_extras(examples, lengths, self.rationale_weight, flatten=False, multiple=None),
        }


class PurifiedSeq2SeqDistillTrainer(_PurifiedDistillation, Seq2SeqTrainer):
    """A `transformers.Seq2SeqTrainer` that distils purified teacher rationales into an encoder-decoder student (the
    paper's FLAN-T5 family), with the same data, purification, objective and metrics as [`PurifiedDistillTrainer`].

    Args: as [`PurifiedDistillTrainer`], with a [`PurifiedSeq2SeqDistillConfig`] and the tokenizer required.
    """

    _config_class = PurifiedSeq2SeqDistillConfig

    def _check_student(self, model, args, processing_class, selector) -> None:
        if not model.config.is_encoder_decoder:
            raise ValueError(f"{type(model).__name__} is a decoder-only model: use PurifiedDistillTrainer for it.")
        if processing_class is None:
            raise ValueError("PurifiedSeq2SeqDistillTrainer needs the student's tokenizer as processing_class.")

    def _init_trainer(self, model, args, train, evaluation, processing_class, select, kwargs: dict) -> None:
        start = model.config.decoder_start_token_id
        tokenize = {"fn_kwargs": {"tokenizer": processing_class, "args": args, "start": start}, "desc": "Tokenizing"}
        train = train.map(_tokenize_seq2seq, remove_columns=["prompt", "completion"], **tokenize)
        if evaluation is not None:
            evaluation = evaluation.map(_tokenize_seq2seq, remove_columns=["prompt", "completion"], **tokenize)
        collator = Seq2SeqDistillationCollator(processing_class.pad_token_id, args.rationale_weight, select)
        Seq2SeqTrainer.__init__(
            self,
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=processing_class,
            **kwargs,
        )
        # The loss is normalised per micro-batch below; the Trainer divides it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.model.add_model_tags(self._tag_names)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        extras = {key: inputs.pop(key) for key in DISTILLATION_KEYS}
        outputs = model(**inputs)
        labels = inputs["labels"]
        token_nll = nn.functional.cross_entropy(
            outputs.logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        mask = labels != IGNORE_INDEX
        weights = extras["loss_weights"].to(token_nll)
        loss = (token_nll * weights).sum() / mask.sum().clamp(min=1)
        correct = outputs.logits.argmax(-1) == labels
        self._after_forward(extras, token_nll.detach(), correct, mask, extras["example_index"].to(labels.device))
        return (loss, outputs) if return_outputs else loss


def _tokenize_seq2seq(example: dict, tokenizer, args: PurifiedSeq2SeqDistillConfig, start: int | None) -> dict:
    """Prompt as the encoder input, completion (with the tokenizer's end token) as the labels; a leading decoder
    start token (a BERT vocabulary's [CLS], say) is left to the model's own label shift."""
    labels = tokenizer(example["completion"], truncation=True, max_length=args.max_target_length + 1)["input_ids"]
    labels = labels[1:] if labels and labels[0] == start else labels
    labels = labels[: args.max_target_length]
    inputs = tokenizer(example["prompt"], truncation=True, max_length=args.max_source_length)["input_ids"]
    return {"input_ids": inputs, "labels": labels}
