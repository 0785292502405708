"""Plackett-Luce ranking (knowledge purification, arXiv 2602.01064): training-free, similarity-weighted, as RouteLLM's
SW-ranking router.

The reference rows' scores become pairwise comparisons (teacher a beats b on a row where it scores higher). For
each new question q, every reference row m is weighted by w = gamma^(1 + cos(E(q), E(q_m))) and Bradley-Terry /
Plackett-Luce strengths xi are fitted to the weighted comparisons by maximum likelihood (with a small L2 term that
keeps them finite); P(teacher i | q) = softmax(xi)_i. Nothing is trained: `fit` stores the reference embeddings
and scores, which save and push with the router.
"""

from __future__ import annotations

import torch

from ..encoder import SentenceEncoder
from ..router import TeacherRouter


class PlackettLuceRouter(TeacherRouter):
    """Args (besides `TeacherRouter`'s):
    gamma: base of the similarity weight gamma^(1+cos) (RouteLLM uses 10).
    l2: L2 penalty on the strengths, relative to the total comparison weight.
    steps: L-BFGS iterations of the batched strength fit.
    """

    method = "plackett_luce"

    def __init__(
        self, teachers: list[str], encoder: SentenceEncoder, gamma: float = 10.0, l2: float = 0.01, steps: int = 200
    ):
        super().__init__(teachers, encoder)
        self.gamma, self.l2, self.steps = gamma, l2, steps
        self.register_buffer("reference_embeddings", torch.empty(0, encoder.dim))
        self.register_buffer("reference_wins", torch.empty(0, len(teachers), len(teachers)))

    def _fit(self, embeddings: torch.Tensor, scores: torch.Tensor) -> None:
        filled = scores.nan_to_num(-torch.inf)
        # wins[m, a, b] = 1 when teacher a scored higher than teacher b on reference row m
        self.reference_wins = (filled[:, :, None] > filled[:, None, :]).float()
        self.reference_embeddings = embeddings

    def load_router_state(self, state: dict[str, torch.Tensor]) -> None:
        self.embedding_mean = state["embedding_mean"]
        self.reference_embeddings = state["reference_embeddings"]
        self.reference_wins = state["reference_wins"]

    @torch.enable_grad()
    def teacher_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        if len(self.reference_embeddings) == 0:
            raise ValueError("This Plackett-Luce router has no reference rows: call fit(dataset) first.")
        weights = self.gamma ** (1 + embeddings @ self.reference_embeddings.T)  # [Q, M]
        wins = torch.einsum("qm,mab->qab", weights, self.reference_wins)
        wins = wins / wins.sum((1, 2), keepdim=True).clamp(min=1e-12)
        strengths = torch.zeros(len(embeddings), len(self.teachers), requires_grad=True)
        optimizer = torch.optim.LBFGS([strengths], max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            margins = strengths[:, :, None] - strengths[:, None, :]
            loss = -(wins * torch.nn.functional.logsigmoid(margins)).sum() + self.l2 * strengths.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return strengths.detach()
