"""What the causal and the encoder-decoder purified-distillation trainers share: rationale rows as prompt-completion
examples, per-token task weights, the RL selector's step, and per-example means of per-token results.

Each question gives an answer example (prompt `answer_prefix` + question and choices, completion the gold option's
text) and rationale examples (completion a rationale): the purified one, one per teacher (TinyLLM's all-teachers
baseline), or every teacher's for the RL selector to choose among while training. Every example keeps its question
(`row`), `task` (answer or rationale) and `teacher`, so the collator can weight its tokens and the selector can
drop the rationales it did not choose.
"""

from __future__ import annotations

import torch
from datasets import Dataset

from .config import DistillationArguments
from .data import task_prompt
from .purifiers.reinforce import ReinforceSelector

ANSWER, RATIONALE = 0, 1
MUTED = -1  # an example that stands in for an empty batch: no task, weight 0
EXAMPLE_COLUMNS = ("task", "teacher", "row")


def distillation_examples(
    dataset: Dataset,
    args: DistillationArguments,
    teachers: list[str],
    selector: bool = False,
    mode: str | None = None,
) -> Dataset:
    """Prompt-completion examples with `task`, `teacher` (index, -1 for answers) and `row` (question index).

    Args:
        dataset: rationale rows; in `"purified"` mode without a selector they carry the purified `rationale` (and
            `purified_teacher`).
        args: the trainer's config (prefixes, and `distill_mode` unless `mode` is given).
        teachers: teacher names in the order of `rationales`.
        selector: emit every teacher's rationale with `rationale_prefix`, for an RL selector to choose from.
        mode: a `distill_mode` other than the config's (`"labels_only"` for the evaluation's answer task).
    """
    mode = mode or args.distill_mode
    columns = {"prompt": [], "completion": [], "task": [], "teacher": [], "row": []}

    def add(prompt: str, completion: str, task: int, teacher: int, row: int) -> None:
        if completion.strip():  # a missing rationale is skipped for that teacher on that row
            for name, value in zip(columns, (prompt, completion, task, teacher, row), strict=True):
                columns[name].append(value)

    for index, row in enumerate(dataset):
        question = task_prompt("", row["question"], row["choices"])
        add(args.answer_prefix + question, row["answer"], ANSWER, -1, index)
        if mode == "labels_only":
            continue
        if mode == "all_teachers":
            for teacher, (name, rationale) in enumerate(zip(teachers, row["rationales"], strict=True)):
                add(args.teacher_rationale_prefix.format(teacher=name) + question, rationale, RATIONALE, teacher, index)
        elif selector:
            for teacher, rationale in enumerate(row["rationales"]):
                add(args.rationale_prefix + question, rationale, RATIONALE, teacher, index)
        else:
            chosen = row.get("purified_teacher", "")
            teacher = teachers.index(chosen) if chosen in teachers else -1
            add(args.rationale_prefix + question, row["rationale"], RATIONALE, teacher, index)
    if getattr(args, "conversational", False):  # trl's conversational prompt-completion format
        columns["prompt"] = [[{"role": "user", "content": prompt}] for prompt in columns["prompt"]]
        columns["completion"] = [[{"role": "assistant", "content": text}] for text in columns["completion"]]
    return Dataset.from_dict(columns)


def answer_examples(dataset: Dataset, args: DistillationArguments) -> Dataset:
    """The answer task alone (evaluation: `eval_loss` is the answer NLL, accuracy its exact match)."""
    return distillation_examples(dataset, args, [], mode="labels_only")


def example_token_weights(examples: list[dict], lengths: list[int], rationale_weight: float) -> list[torch.Tensor]:
    """Per example, its tokens' loss weight: 1 for the answer task, λ for a rationale, 0 for a muted example."""
    weight = {ANSWER: 1.0, RATIONALE: rationale_weight, MUTED: 0.0}
    return [torch.full((length,), weight[example["task"]]) for example, length in zip(examples, lengths, strict=True)]


class SelectorStep:
    """The RL selector inside a trainer (knowledge purification, arXiv 2602.01064: RL-based teacher selection): per
    question, the policy samples which teacher's rationale the student trains on; after the step, REINFORCE with
    reward -L_DL of each chosen rationale (the student's mean token NLL on it) against the batch mean.

    The reward leaves out the question's answer loss L_PR of the paper's -(L_PR + L_DL): under example-level
    batching the answer is in another batch, and at a given step it does not depend on the rationale chosen, so it
    only shifts the row's baseline. Policy gradients are averaged across processes, so every copy stays identical.
    """

    def __init__(self, selector: ReinforceSelector, rationale_data: Dataset, learning_rate: float, seed: int):
        self.selector = selector
        self.states = selector.states(rationale_data)
        self.available = torch.tensor([[bool(r.strip()) for r in row] for row in rationale_data["rationales"]])
        self.optimizer = torch.optim.Adam(selector.policy.parameters(), lr=learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.choice: dict[int, tuple[int, torch.Tensor]] = {}  # row -> (chosen teacher, sampled actions)

    def select(self, examples: list[dict]) -> list[dict]:
        """The batch's answers and chosen rationales. A batch of unchosen rationales only keeps its first example,
        muted (no task, weight 0: a step that changes nothing), since an empty batch cannot be collated."""
        kept = [example for example, chosen in zip(examples, self.keep(examples), strict=True) if chosen]
        return kept or [{**examples[0], "task": MUTED}]

    def keep(self, examples: list[dict]) -> list[bool]:
        """Sample a teacher for the batch's questions; keep answers and the chosen rationales."""
        rows = sorted({e["row"] for e in examples if e["task"] == RATIONALE})
        if rows:
            chosen, actions = self.selector.sample(self.states[rows], self.available[rows], self.generator)
            self.choice.update(zip(rows, zip(chosen.tolist(), actions, strict=True), strict=True))
        return [e["task"] == ANSWER or self.choice[e["row"]][0] == e["teacher"] for e in examples]

    def update(self, rows: torch.Tensor, nll: torch.Tensor, accelerator) -> None:
        """One REINFORCE step on the rationale examples of a batch: `rows` [n] and their mean token NLL [n]."""
        if len(rows) == 0:
            return
        rows = rows.cpu()
        actions = torch.stack([self.choice[int(r)][1] for r in rows])
        log_prob = self.selector.log_prob(self.states[rows], actions, self.available[rows])
        reward = -nll.detach().float().cpu()
        advantage = reward - reward.mean()
        self.optimizer.zero_grad()
        (-(advantage * log_prob).mean()).backward()
        if accelerator.num_processes > 1:  # the policy lives on CPU; keep it identical on every process
            for parameter in self.selector.policy.parameters():
                parameter.grad.copy_(accelerator.reduce(parameter.grad.to(accelerator.device), reduction="mean").cpu())
        self.optimizer.step()


def per_example_mean(values: torch.Tensor, mask: torch.Tensor, example_index: torch.Tensor, examples: int):
    """Mean of per-token `values` over each example's masked tokens ([examples])."""
    valid = mask & (example_index >= 0)
    index = example_index.clamp(min=0)[valid]
    total = torch.zeros(examples, device=values.device).index_add_(0, index, values[valid].float())
    count = torch.zeros(examples, device=values.device).index_add_(
        0, index, torch.ones(len(index), device=index.device)
    )
    return total / count.clamp(min=1)
