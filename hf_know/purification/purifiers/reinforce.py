"""RL teacher selection (knowledge purification, arXiv 2602.01064), after Reinforced Multi-Teacher Selection
(Yuan et al. 2021).

Per row and teacher the state is s_i = [E(q); E(r_i) * 1(teacher i is right)], and the policy selects teacher i with
probability sigmoid(w . s_i + b). During distillation each row samples one Bernoulli action per teacher; the
highest-probability selected teacher's rationale is used (the highest-probability teacher when none is selected),
and the policy is updated by REINFORCE with reward -(L_PR + L_DL), the student's losses on that row, alternating
with the student's updates (`PurifiedDistillTrainer(selector=...)`). Afterwards `purify` picks the most probable
teacher per row. "Right" is a positive `teacher_scores` entry: the unforced answer, else the support score.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from torch import nn

from ..encoder import SentenceEncoder
from ..purifier import select_rationales
from ..router import TeacherRouter
from ..support import teacher_scores


class ReinforceSelector(TeacherRouter):
    """A linear Bernoulli policy over teachers, trained jointly with the student by `PurifiedDistillTrainer`."""

    method = "reinforce"

    def __init__(self, teachers: list[str], encoder: SentenceEncoder):
        super().__init__(teachers, encoder)
        self.policy = nn.Linear(2 * encoder.dim, 1)
        nn.init.zeros_(self.policy.weight)
        nn.init.zeros_(self.policy.bias)

    def states(self, dataset: Dataset, scores: torch.Tensor | None = None) -> torch.Tensor:
        """[rows, teachers, 2 * dim] states; `scores` default to `teacher_scores(dataset, self.encoder)`."""
        self.check_teachers(dataset)
        scores = teacher_scores(dataset, self.encoder) if scores is None else scores
        questions = self.encoder.embed(dataset["question"])
        flat = [r for row in dataset["rationales"] for r in row]
        rationales = self.encoder.embed(flat).view(len(dataset), len(self.teachers), -1)
        right = (scores.nan_to_num(-1.0) > 0).unsqueeze(-1).float()
        return torch.cat([questions.unsqueeze(1).expand_as(rationales), rationales * right], dim=-1)

    def selection_logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.policy(states).squeeze(-1)

    def sample(
        self, states: torch.Tensor, available: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen teacher per row, the sampled Bernoulli actions [rows, teachers]) among the available teachers."""
        logits = self.selection_logits(states).detach()
        actions = torch.bernoulli(logits.sigmoid(), generator=generator).bool() & available
        ranked = logits.masked_fill(~available, -torch.inf)
        selected = ranked.masked_fill(~actions, -torch.inf)
        return torch.where(actions.any(1), selected.argmax(1), ranked.argmax(1)), actions

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Log-probability [rows] of `actions` under the policy, over the available teachers (differentiable)."""
        logits = self.selection_logits(states)
        log_prob = torch.where(actions, nn.functional.logsigmoid(logits), nn.functional.logsigmoid(-logits))
        return (log_prob * available).sum(1)

    def fit(self, *args, **kwargs):
        raise TypeError(
            "ReinforceSelector is trained jointly with the student: pass it as PurifiedDistillTrainer(selector=...)."
        )

    @torch.no_grad()
    def purify(self, dataset: Dataset) -> Dataset:
        logits = self.selection_logits(self.states(dataset))
        return select_rationales(dataset, logits, self.teachers, self.method, logits.sigmoid())
