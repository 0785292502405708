"""`PurifiedDistillConfig`: the `TrainingArguments` of `PurifiedDistillTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cli import ScriptTrainingArguments

DISTILL_MODES = ("purified", "all_teachers", "labels_only")


@dataclass
class PurifiedDistillConfig(ScriptTrainingArguments):
    r"""
    Configuration class for [`PurifiedDistillTrainer`].

    Only the parameters specific to purified distillation are listed here; see `transformers.TrainingArguments`
    for the others. Defaults differ from `TrainingArguments` in: `learning_rate` (5e-5 as TinyLLM),
    `logging_steps` (10), and as every hf-know script's (`hf_know.cli.ScriptTrainingArguments`) `save_strategy`
    ("no"), `report_to` ("none") and `remove_unused_columns` (False, the tokenised task columns are kept).

    Parameters:
        > Parameters that control the distillation objective

        distill_mode (`str`, *optional*, defaults to `"purified"`):
            `"purified"`: one rationale task on the purified `rationale` column, L = L_PR + λ·L_DL (the paper);
            `"all_teachers"`: TinyLLM, one rationale task per teacher, L = L_PR + λ·Σ_j L_DL_j;
            `"labels_only"`: the answer task alone (plain fine-tuning).
            Passing an RL `selector` to the trainer makes it choose the rationale per row while training.
        rationale_weight (`float`, *optional*, defaults to `1.0`):
            λ, the weight of each rationale task's NLL.
        answer_prefix (`str`, *optional*, defaults to `"predict: "`):
            Prefix of the answer task's input (distilling step-by-step's task prefix).
        rationale_prefix (`str`, *optional*, defaults to `"explain: "`):
            Prefix of the purified rationale task's input.
        teacher_rationale_prefix (`str`, *optional*, defaults to `"explain ({teacher}): "`):
            Prefix of teacher `{teacher}`'s rationale task in `"all_teachers"` mode (TinyLLM gives each teacher its
            own task prefix).
        max_source_length (`int`, *optional*, defaults to `256`):
            Maximum tokens of a task input (question and choices); longer inputs are truncated.
        max_answer_length (`int`, *optional*, defaults to `32`):
            Maximum tokens of the answer target.
        max_rationale_length (`int`, *optional*, defaults to `128`):
            Maximum tokens of a rationale target.
        generation_max_new_tokens (`int`, *optional*, defaults to `32`):
            Tokens generated per answer at evaluation (accuracy is by exact match of the decoded answer).

        > Parameters beyond the paper

        kd_weight (`float`, *optional*, defaults to `0.0`):
            Weight of token-level distillation, KL(teacher ‖ student) on the rationale tokens, from the teacher each
            row's rationale came from. Needs `teacher_models` whose tokenizer equals the student's. Off by default.
        kd_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the token-level distillation.
        policy_learning_rate (`float`, *optional*, defaults to `1e-3`):
            Adam learning rate of the RL selector's policy (REINFORCE), updated after every student step.
    """

    distill_mode: str = field(default="purified", metadata={"help": f"One of {DISTILL_MODES}."})
    rationale_weight: float = field(default=1.0, metadata={"help": "λ: weight of each rationale task's NLL."})
    answer_prefix: str = field(default="predict: ", metadata={"help": "Prefix of the answer task's input."})
    rationale_prefix: str = field(default="explain: ", metadata={"help": "Prefix of the rationale task's input."})
    teacher_rationale_prefix: str = field(
        default="explain ({teacher}): ", metadata={"help": "Per-teacher rationale prefix in all_teachers mode."}
    )
    max_source_length: int = field(default=256, metadata={"help": "Maximum tokens of a task input."})
    max_answer_length: int = field(default=32, metadata={"help": "Maximum tokens of the answer target."})
    max_rationale_length: int = field(default=128, metadata={"help": "Maximum tokens of a rationale target."})
    generation_max_new_tokens: int = field(default=32, metadata={"help": "Tokens generated per answer at eval."})
    kd_weight: float = field(default=0.0, metadata={"help": "Token-level distillation weight (0 = off)."})
    kd_temperature: float = field(default=1.0, metadata={"help": "Temperature of token-level distillation."})
    policy_learning_rate: float = field(default=1e-3, metadata={"help": "RL selector's policy learning rate."})

    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (TinyLLM: 5e-5)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})

    def __post_init__(self):
        if self.distill_mode not in DISTILL_MODES:
            raise ValueError(f"distill_mode={self.distill_mode!r}; expected one of {DISTILL_MODES}.")
        if self.rationale_weight < 0 or self.kd_weight < 0:
            raise ValueError(f"rationale_weight and kd_weight must be >= 0, got {self.rationale_weight}, "
                             f"{self.kd_weight}.")  # fmt: skip
        super().__post_init__()
