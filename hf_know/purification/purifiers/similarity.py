"""Similarity-based router (knowledge purification, arXiv 2602.01064), after RouterDC (arXiv 2409.19886).

Each teacher has a trainable embedding k_i; P(teacher i | q) = softmax_i(cos(W E(q), k_i) / t). Trained with
RouterDC's dual contrastive loss:

- sample-teacher: for each of a question's top-K teachers (by score), -log softmax of its similarity against the
  question's bottom-K teachers; a "positive" that does not score above every negative is skipped;
- sample-sample: questions in the same k-means cluster of E(q) attract, `num_negatives` questions from other
  clusters repel (InfoNCE on W E(q)).

Our encoder is frozen (see `encoder.py`), so a trainable linear map W (initialised to the identity) stands in for
RouterDC's fine-tuned encoder.
"""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans
from torch import nn

from ..encoder import SentenceEncoder
from ..router import TeacherRouter


class SimilarityRouter(TeacherRouter):
    """Args (besides `TeacherRouter`'s):
    temperature: t of the cosine softmax (RouterDC: 1).
    top_k: positives and negatives per question (at most teachers - 1; RouterDC: 3 of many LLMs).
    num_clusters: k-means clusters of the sample-sample loss.
    num_negatives: other-cluster negatives per question (RouterDC: 3).
    cluster_loss_weight: weight of the sample-sample loss (RouterDC: 1).
    """

    method = "similarity"

    def __init__(
        self,
        teachers: list[str],
        encoder: SentenceEncoder,
        temperature: float = 0.1,
        top_k: int = 1,
        num_clusters: int = 8,
        num_negatives: int = 3,
        cluster_loss_weight: float = 1.0,
    ):
        super().__init__(teachers, encoder)
        self.temperature, self.top_k = temperature, min(top_k, len(teachers) - 1)
        self.num_clusters, self.num_negatives, self.cluster_loss_weight = (
            num_clusters,
            num_negatives,
            cluster_loss_weight,
        )
        self.projection = nn.Linear(encoder.dim, encoder.dim, bias=False)
        nn.init.eye_(self.projection.weight)
        self.teacher_embeddings = nn.Parameter(torch.randn(len(teachers), encoder.dim) * 0.78)

    def _project(self, embeddings: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(embeddings), dim=-1)

    def teacher_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        keys = nn.functional.normalize(self.teacher_embeddings, dim=-1)
        return self._project(embeddings) @ keys.T / self.temperature

    def sample_teacher_loss(self, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        filled = scores.nan_to_num(-torch.inf)
        order = filled.argsort(dim=1, descending=True)
        positives, negatives = order[:, : self.top_k], order[:, -self.top_k :]
        negative_logits = logits.gather(1, negatives)
        negative_scores = filled.gather(1, negatives)
        losses = []
        for k in range(self.top_k):
            positive_score = filled.gather(1, positives[:, k : k + 1])
            valid = (positive_score > negative_scores).all(1)
            if valid.any():
                candidates = torch.cat([logits.gather(1, positives[:, k : k + 1]), negative_logits], dim=1)
                losses.append(-candidates.log_softmax(1)[valid, 0])
        return torch.cat(losses).mean() if losses else logits.sum() * 0.0

    def sample_sample_loss(self, projected: torch.Tensor, clusters: torch.Tensor, generator) -> torch.Tensor:
        losses = []
        for i in range(len(projected)):
            same = (clusters == clusters[i]).nonzero().flatten()
            same, other = same[same != i], (clusters != clusters[i]).nonzero().flatten()
            if len(same) == 0 or len(other) == 0:
                continue
            positive = same[torch.randint(len(same), (1,), generator=generator)]
            negatives = other[torch.randint(len(other), (self.num_negatives,), generator=generator)]
            similarity = projected[i] @ projected[torch.cat([positive, negatives])].T / self.temperature
            losses.append(-similarity.log_softmax(0)[0])
        return torch.stack(losses).mean() if losses else projected.sum() * 0.0

    def routing_loss(self, features: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        projected = self._project(features)
        keys = nn.functional.normalize(self.teacher_embeddings, dim=-1)
        loss = self.sample_teacher_loss(projected @ keys.T / self.temperature, scores)
        clusters = self.clusters[rows]
        return loss + self.cluster_loss_weight * self.sample_sample_loss(projected, clusters, self.generator)

    def _fit(self, features: torch.Tensor, scores: torch.Tensor, seed: int = 0, **kwargs) -> None:
        num_clusters = max(2, min(self.num_clusters, len(features) // 4))
        kmeans = KMeans(num_clusters, n_init=4, random_state=seed)
        self.clusters = torch.from_numpy(kmeans.fit_predict(features.numpy())).long()
        super()._fit(features, scores, seed=seed, **kwargs)
