"""The configurations of the purified-distillation trainers: trl's `SFTConfig` for causal students,
`Seq2SeqTrainingArguments` for encoder-decoder ones, both with the same distillation fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import Seq2SeqTrainingArguments
from transformers.utils import is_torch_bf16_gpu_available
from trl import SFTConfig

DISTILL_MODES = ("purified", "all_teachers", "labels_only")


@dataclass
class DistillationArguments:
    r"""
    The fields both purified-distillation configs share (knowledge purification, arXiv 2602.01064, section 3; the
    multi-task objective of TinyLLM / distilling step-by-step).

    Parameters:
        distill_mode (`str`, *optional*, defaults to `"purified"`):
            `"purified"`: one rationale task per question on the purified rationale, L = L_PR + λ·L_DL (the paper);
            `"all_teachers"`: TinyLLM's baseline, one rationale task per teacher, L = L_PR + λ·Σ_j L_DL_j;
            `"labels_only"`: the answer task alone (plain fine-tuning). An RL `selector` passed to the trainer
            chooses each question's rationale while training (`"purified"` only).
        rationale_weight (`float`, *optional*, defaults to `1.0`):
            λ: the weight of every rationale token in the loss (answer tokens weigh 1). The loss is the weighted sum
            of the completion tokens' negative log-likelihoods over their count, so with λ = 1 it is exactly the
            trainer's own completion-only loss.
        answer_prefix (`str`, *optional*, defaults to `"predict: "`):
            Prefix of the answer task's prompt (distilling step-by-step's task prefix).
        rationale_prefix (`str`, *optional*, defaults to `"explain: "`):
            Prefix of the purified rationale task's prompt.
        teacher_rationale_prefix (`str`, *optional*, defaults to `"explain ({teacher}): "`):
            Prefix of teacher `{teacher}`'s rationale task in `"all_teachers"` mode (TinyLLM gives each teacher its
            own task prefix).
        policy_learning_rate (`float`, *optional*, defaults to `1e-3`):
            Adam learning rate of the RL selector's policy (REINFORCE), updated after every student step.
    """

    distill_mode: str = field(default="purified", metadata={"help": f"One of {DISTILL_MODES}."})
    rationale_weight: float = field(default=1.0, metadata={"help": "λ: weight of every rationale token."})
    answer_prefix: str = field(default="predict: ", metadata={"help": "Prefix of the answer task's prompt."})
    rationale_prefix: str = field(default="explain: ", metadata={"help": "Prefix of the rationale task's prompt."})
    teacher_rationale_prefix: str = field(
        default="explain ({teacher}): ", metadata={"help": "Per-teacher rationale prefix in all_teachers mode."}
    )
    policy_learning_rate: float = field(default=1e-3, metadata={"help": "RL selector's policy learning rate."})
    # Not a distillation field: both configs pin dataloader memory only where a CUDA device can use it.
    dataloader_pin_memory: bool = field(
        default_factory=torch.cuda.is_available, metadata={"help": "Pin dataloader memory (on with CUDA)."}
    )

    def __post_init__(self):
        if self.distill_mode not in DISTILL_MODES:
            raise ValueError(f"distill_mode={self.distill_mode!r}; expected one of {DISTILL_MODES}.")
        if self.rationale_weight < 0:
            raise ValueError(f"rationale_weight={self.rationale_weight}: expected a weight >= 0.")
        if "{teacher}" not in self.teacher_rationale_prefix:
            raise ValueError(
                f"teacher_rationale_prefix={self.teacher_rationale_prefix!r} must contain '{{teacher}}', which "
                "tells the teachers' rationale tasks apart."
            )
        super().__post_init__()


@dataclass
class PurifiedDistillConfig(DistillationArguments, SFTConfig):
    r"""
    Configuration class for [`PurifiedDistillTrainer`]: trl's [`~trl.SFTConfig`] plus the distillation fields.

    Only the parameters specific to purified distillation are listed here; see [`~trl.SFTConfig`] for the others
    (`max_length`, `packing`, `padding_free`, `completion_only_loss`, ...). Packing mixes examples of different
    tasks in one sequence, which the per-task weights cannot follow: it is refused unless `rationale_weight` is 1.
    Defaults differ from `SFTConfig` in `learning_rate` (5e-5, as TinyLLM), `save_strategy` ("no") and `bf16` (on
    only where a bf16 GPU is available, so the same recipe runs on CPU).

    Parameters:
        > Parameters that control the distillation objective

        distill_mode (`str`, *optional*, defaults to `"purified"`):
            `"purified"`, `"all_teachers"` or `"labels_only"`; see [`DistillationArguments`].
        rationale_weight (`float`, *optional*, defaults to `1.0`):
            λ, the weight of every rationale token.
        answer_prefix (`str`, *optional*, defaults to `"predict: "`):
            Prefix of the answer task's prompt.
        rationale_prefix (`str`, *optional*, defaults to `"explain: "`):
            Prefix of the purified rationale task's prompt.
        teacher_rationale_prefix (`str`, *optional*, defaults to `"explain ({teacher}): "`):
            Prefix of each teacher's rationale task in `"all_teachers"` mode.
        policy_learning_rate (`float`, *optional*, defaults to `1e-3`):
            Adam learning rate of the RL selector's policy.
        conversational (`bool`, *optional*, defaults to `False`):
            Give each task as a user message and its completion as the assistant's reply, so SFT formats them with
            the tokenizer's chat template (instruction-tuned students); plain prompt-completion text otherwise.
    """

    conversational: bool = field(
        default=False, metadata={"help": "Tasks as chat messages, formatted by the tokenizer's chat template."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (TinyLLM: 5e-5)."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing during training."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; by default on where a bf16 GPU is available."}
    )

    def __post_init__(self):
        if self.bf16 is None:  # SFTConfig turns it on everywhere, which fails on CPU
            self.bf16 = not self.fp16 and not self.use_cpu and is_torch_bf16_gpu_available()
        if self.activation_checkpointing is None and self.gradient_checkpointing is True:
            # SFTConfig's default, under the name transformers deprecates: carried over without its FutureWarning
            self.activation_checkpointing = True
        super().__post_init__()
        if self.packing and self.rationale_weight != 1:
            raise ValueError(
                f"packing=True with rationale_weight={self.rationale_weight}: packed sequences mix tasks, so tokens "
                "cannot be weighted per task. Use padding_free=True instead, or rationale_weight=1."
            )


@dataclass
class PurifiedSeq2SeqDistillConfig(DistillationArguments, Seq2SeqTrainingArguments):
    r"""
    Configuration class for [`PurifiedSeq2SeqDistillTrainer`] (encoder-decoder students, the paper's FLAN-T5 family):
    `transformers.Seq2SeqTrainingArguments` plus the distillation fields of [`DistillationArguments`].

    Parameters:
        max_source_length (`int`, *optional*, defaults to `256`):
            Maximum tokens of a task prompt (question and choices); longer prompts are truncated.
        max_target_length (`int`, *optional*, defaults to `128`):
            Maximum tokens of a completion (answer or rationale).
    """

    max_source_length: int = field(default=256, metadata={"help": "Maximum tokens of a task prompt."})
    max_target_length: int = field(default=128, metadata={"help": "Maximum tokens of a completion."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (TinyLLM: 5e-5)."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing during training."})
