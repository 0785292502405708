"""PLM classifier router (knowledge purification, arXiv 2602.01064): question embedding -> 2-layer MLP -> one
logit per teacher, trained with cross-entropy towards each row's best-scoring teacher(s)."""

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

    def routing_loss(self, features: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.teacher_logits(features), best_teacher_targets(scores))
