"""Weight extrapolators: from a window of checkpoints (smallest data first, full data last) to the weights one or
more steps beyond the full-data one, each step standing for `1/r` times more data.

Every scalar is extrapolated on its own. Position `t` along the window is `log_{1/r}` of the data size relative to
the full data: the window sits at `t = -(S-1), ..., 0` and step `k` is `t = k`. `naive`, `task_vector`, `linear`,
`quadratic` and `shrink` are then fixed linear combinations of the window (one matrix product); `known` applies the
hyper-model recursively, sliding the window over its own predictions, as the paper does.
"""

from __future__ import annotations

import torch

from .hypermodel import KnowHyperModel

PREDICTORS = ("naive", "task_vector", "linear", "quadratic", "shrink", "known")
# Per-step shrink factors of the `shrink` control (our probe of KNOWN's released weights: they shrink conv kernels by
# about 20% and FC matrices by about 7% per step); biases are left alone.
DEFAULT_SHRINK = {"conv": 0.2, "fc": 0.07, "bias": 0.0}


def min_window(predictor: str, hypermodel: KnowHyperModel | None = None) -> int:
    """How many checkpoints a predictor reads (the newest ones)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor={predictor!r} is not one of {PREDICTORS}.")
    return {"naive": 1, "task_vector": 2, "linear": 2, "quadratic": 3, "shrink": 1}.get(
        predictor, hypermodel.window if hypermodel is not None else 5
    )


def polynomial_coefficients(window: int, degree: int, step: int) -> torch.Tensor:
    """`c` such that `trajectory @ c` is the least-squares polynomial of `degree` through the window, at `t = step`."""
    positions = torch.arange(-(window - 1), 1, dtype=torch.float64)
    vandermonde = positions[:, None] ** torch.arange(degree + 1, dtype=torch.float64)
    at_step = float(step) ** torch.arange(degree + 1, dtype=torch.float64)
    return (at_step @ torch.linalg.pinv(vandermonde)).to(torch.float32)


class Extrapolator:
    """One named predictor, ready to apply to `[N, S]` trajectory chunks of one kind of tensor.

    Args:
        predictor: one of `PREDICTORS`.
        steps: how far to go: step `k` stands for `(1/r)^k` times the full data.
        hypermodel: the KNOWN hyper-model (`predictor="known"` only).
        shrink: per-kind shrink factor of `predictor="shrink"` (default `DEFAULT_SHRINK`).
    """

    def __init__(
        self,
        predictor: str,
        steps: int,
        hypermodel: KnowHyperModel | None = None,
        shrink: dict[str, float] | None = None,
    ):
        if steps < 1:
            raise ValueError(f"steps={steps}: expected a positive number of extrapolation steps.")
        if predictor == "known" and hypermodel is None:
            raise ValueError("predictor='known' needs a hyper-model (KnowPredictor.from_pretrained()).")
        self.window = min_window(predictor, hypermodel)
        self.predictor, self.steps, self.hypermodel = predictor, steps, hypermodel
        self.shrink = {**DEFAULT_SHRINK, **(shrink or {})}
        self._coefficients: dict[tuple[int, str], torch.Tensor] = {}

    def reads(self, available: int) -> int:
        """How many of the newest `available` checkpoints this predictor reads: all of them for the fitted
        `linear` and `quadratic`, its fixed window otherwise."""
        return available if self.predictor in ("linear", "quadratic") else self.window

    def coefficients(self, window: int, kind: str) -> torch.Tensor:
        """The linear combination of a `window`-long trajectory that a linear predictor returns."""
        k, newest = self.steps, torch.eye(window)[:, -1]
        if self.predictor == "naive":
            return newest
        if self.predictor == "shrink":
            return newest * (1 - self.shrink[kind]) ** k
        if self.predictor == "task_vector":  # Θ0 + k (Θ0 - Θ1)
            return newest * (1 + k) - torch.eye(window)[:, -2] * k
        return polynomial_coefficients(window, 1 if self.predictor == "linear" else 2, k)

    def __call__(self, trajectory: torch.Tensor, kind: str) -> torch.Tensor:
        """`[N, S]` float32 (or float64) trajectories (smallest data first) -> `[N]` extrapolated values, on the
        trajectories' device (KNOWN's hyper-model must be there too)."""
        if self.predictor != "known":
            window = self.reads(trajectory.shape[-1])
            if (window, kind) not in self._coefficients:  # once per run, not per chunk
                self._coefficients[window, kind] = self.coefficients(window, kind)
            return trajectory[:, -window:] @ self._coefficients[window, kind].to(trajectory)
        return self.hypermodel.nets[kind].retrodict(trajectory[:, -self.window :], self.steps)
