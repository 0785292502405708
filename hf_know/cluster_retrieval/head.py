"""A rehearsal-free classifier head from class statistics (LDA, as in RanPAC and PROTEUS's last stage).

Per task: the mean embedding of each class and the task's pooled within-class covariance, shrunk towards a
multiple of the identity. A class's score is the linear discriminant mu_c' P h - mu_c' P mu_c / 2 with P the
inverse covariance: no parameter is trained and no example is kept, only these statistics.
"""

from __future__ import annotations

import torch


def fit_lda(
    features: torch.Tensor, labels: torch.Tensor, shrinkage: float
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Class ids, class means [C, D] and the shrunk within-class precision [D, D] of one task's embeddings."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"Got {features.shape[0]} embeddings but {labels.shape[0]} labels.")
    x = features.double()
    classes = sorted(set(labels.tolist()))
    means = torch.stack([x[labels == c].mean(0) for c in classes])
    centred = x - means[torch.searchsorted(torch.tensor(classes), labels)]
    covariance = centred.T @ centred / max(x.shape[0] - len(classes), 1)
    scale = covariance.diagonal().mean().clamp(min=1e-12)
    covariance = (1 - shrinkage) * covariance + shrinkage * scale * torch.eye(x.shape[1], dtype=x.dtype)
    return classes, means, torch.linalg.inv(covariance)


def lda_scores(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Linear discriminant scores [N, C] of embeddings [N, D]."""
    projected = means @ precision  # [C, D]
    return features.double() @ projected.T - 0.5 * (projected * means).sum(-1)
