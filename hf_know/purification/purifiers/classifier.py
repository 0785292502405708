"""PLM classifier router (purification.md §2, method 3): question embedding -> 2-layer MLP -> one logit per teacher,
trained with cross-entropy towards each row's best-scoring teacher(s)."""

from __future__ import annotations

import torch
from torch import nn

from ..encoder import SentenceEncoder
from ..router import TeacherRouter, best_teacher_targets


class ClassifierRouter(TeacherRouter):
    """Args (besides `TeacherRouter`'s):
    hidden_size: width of the MLP's hidden layer.
    dropout: dropout before each linear layer.
    """

    method = "classifier"

    def __init__(self, teachers: list[str], encoder: SentenceEncoder, hidden_size: int = 256, dropout: float = 0.1):
        super().__init__(teachers, encoder)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(encoder.dim, hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, len(teachers)),
        )

    def teacher_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings)

    def _fit(
        self,
        embeddings: torch.Tensor,
        scores: torch.Tensor,
        epochs: int = 30,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        seed: int = 0,
    ) -> None:
        targets = best_teacher_targets(scores)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(self.head.parameters(), lr=learning_rate)
        for _ in range(epochs):
            for batch in torch.randperm(len(embeddings), generator=generator).split(batch_size):
                loss = nn.functional.cross_entropy(self.teacher_logits(embeddings[batch]), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
