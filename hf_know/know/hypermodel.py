"""KNOWN: the meta-learned hyper-model that runs a forgetting trajectory backwards (arXiv 2508.05059).

KNOWN works on every scalar parameter independently. Its input is the scalar's last `window` values along the
trajectory, ordered from the smallest-data checkpoint to the full-data one, together with their successive
differences; its output is a bounded step `delta = tanh(...)`, and the prediction is `newest value + delta`, as if
trained on `1/r` times more data. The architecture is the authors' (`KNOWN.py`), layer by layer, so their released
Keras weights convert exactly (`hf_know.know.keras`).

There are three such networks, for conv kernels, fully-connected matrices and biases; `KnowHyperModel` holds them
with the rule that routes a tensor to one of them, and is a Hub model (`from_pretrained` / `save_pretrained` /
`push_to_hub`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..hub import mixin_metadata
from ..io import GuardedSaveMixin

KINDS = ("conv", "fc", "bias")
# Cap on the exp units' exponent in the float64 fallback: exp(600) ~ 4e260 stays finite through the layers after it.
EXP_LIMIT = 600.0
CONV_RULES = ("any_kernel", "3x3_only")


class ExpUnitBranch(nn.Module):
    """One KNOWN branch: `h = in(x)`, `c = relu(squeeze(h))`, `g = additive(c) + coefficient(c) * exp(exponent(c) * h)`
    (WNN's input-conditioned exponential unit), `z = leaky_relu(out(g), slope)`."""

    def __init__(self, in_features: int, hidden: int = 64, bottleneck: int = 8, out_features: int = 32):
        super().__init__()
        self.inp = nn.Linear(in_features, hidden)
        self.squeeze = nn.Linear(hidden, bottleneck)
        self.additive = nn.Linear(bottleneck, hidden)
        self.coefficient = nn.Linear(bottleneck, hidden)
        self.exponent = nn.Linear(bottleneck, hidden)
        self.out = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor, negative_slope: float) -> torch.Tensor:
        h = self.inp(x)
        c = torch.relu(self.squeeze(h))
        g = self.additive(c) + self.coefficient(c) * torch.exp(self.exponent(c) * h)
        return nn.functional.leaky_relu(self.out(g), negative_slope)


class KnownNet(nn.Module):
    """KNOWN for one kind of tensor (9,425 parameters at `window=5`): maps trajectories `[N, window]` to steps `[N]`.

    Args:
        window: trajectory length S; the difference branch sees its `S - 1` successive differences.
        negative_slope: LeakyReLU slope. Keras' default, 0.3, is what the released weights were trained with.
    """

    def __init__(self, window: int = 5, negative_slope: float = 0.3):
        super().__init__()
        self.window = window
        self.negative_slope = negative_slope
        self.values = ExpUnitBranch(window)
        self.differences = ExpUnitBranch(window - 1)
        self.head = nn.Linear(2 * self.values.out.out_features, 1)

    def forward(self, trajectory: torch.Tensor) -> torch.Tensor:
        if trajectory.shape[-1] != self.window:
            raise ValueError(
                f"KNOWN expects trajectories of length {self.window}, got shape {tuple(trajectory.shape)}."
            )
        z = torch.cat(
            [
                self.values(trajectory, self.negative_slope),
                self.differences(trajectory.diff(dim=-1), self.negative_slope),
            ],
            dim=-1,
        )
        return torch.tanh(self.head(z)).squeeze(-1)

    def reset_parameters(self) -> None:
        """The authors' initialisation: Keras' Glorot-uniform kernels and zero biases, except the first and the
        64->32 layer of each branch, which start from VarianceScaling(0.1, fan_in, uniform)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for branch in (self.values, self.differences):
            for layer in (branch.inp, branch.out):
                bound = math.sqrt(3 * 0.1 / layer.in_features)
                nn.init.uniform_(layer.weight, -bound, bound)

    @torch.inference_mode()
    def fast_forward(self, trajectory: torch.Tensor) -> torch.Tensor:
        """`forward` for inference, about 3x faster on CPU: both branches as one batched matmul per layer, the
        difference operator folded into the first layer, the squeeze layer computed from the trajectory directly
        (both are affine in it), the additive, coefficient and exponent layers as one matmul, in-place activations.
        Equal to `forward` up to float rounding wherever float32 holds the exp units' values.

        Range-safe: rows whose float32 result is not finite (the exp units overflow for weights of magnitude above
        a few tens) are recomputed in float64 with the exponent capped at `EXP_LIMIT`, so every finite trajectory
        gets a finite step."""
        steps = self._fast_forward(trajectory, torch.float32, exp_limit=None)
        overflowed = ~torch.isfinite(steps)
        if overflowed.any():
            rows = trajectory[overflowed].to(torch.float64)
            steps[overflowed] = self._fast_forward(rows, torch.float64, exp_limit=EXP_LIMIT).to(steps.dtype)
        return steps

    def _fast_forward(self, trajectory: torch.Tensor, dtype: torch.dtype, exp_limit: float | None) -> torch.Tensor:
        packed = self._packed(dtype)
        x = trajectory.to(dtype).expand(2, *trajectory.shape)
        h = torch.baddbmm(packed["inp_b"], x, packed["inp"])
        c = torch.baddbmm(packed["squeeze_b"], x, packed["squeeze"]).relu_()
        exponent, coefficient, additive = torch.baddbmm(packed["units_b"], c, packed["units"]).chunk(3, dim=-1)
        g = exponent.mul_(h)
        g = (g.clamp_(max=exp_limit) if exp_limit is not None else g).exp_().mul_(coefficient).add_(additive)
        z = nn.functional.leaky_relu(torch.baddbmm(packed["out_b"], g, packed["out"]), self.negative_slope, True)
        return torch.bmm(z, packed["head"]).sum(0).squeeze(-1).add_(packed["head_b"]).tanh_()

    def _packed(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Both branches' weights stacked `[2, in, out]` in `dtype` on the parameters' device; rebuilt when any
        parameter changed (`_version`)."""
        version = tuple(p._version for p in self.parameters())
        cache = self.__dict__.setdefault("_packed_cache", {})
        key = (dtype, self.head.weight.device)  # `.to(device)` moves the parameters without bumping their version
        if cache.get(key, (None,))[0] != version:
            with torch.no_grad():
                cache[key] = (version, self._pack(dtype))
        return cache[key][1]

    def _pack(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        weight = self.head.weight
        # differences = trajectory @ eye.diff(), so the difference branch's first layer absorbs the operator.
        difference_operator = torch.eye(self.window, dtype=weight.dtype, device=weight.device).diff(dim=1)
        branches = (self.values, self.differences)
        inp = torch.stack([self.values.inp.weight.T, difference_operator @ self.differences.inp.weight.T])
        inp_b = torch.stack([branch.inp.bias for branch in branches])[:, None]
        units = ("exponent", "coefficient", "additive")
        packed = {
            "inp": inp,
            "inp_b": inp_b,
            # squeeze(inp(x)) is affine in x: one [window, bottleneck] matmul instead of two.
            "squeeze": inp @ torch.stack([branch.squeeze.weight.T for branch in branches]),
            "squeeze_b": inp_b @ torch.stack([branch.squeeze.weight.T for branch in branches])
            + torch.stack([branch.squeeze.bias for branch in branches])[:, None],
            "units": torch.stack([torch.cat([getattr(b, u).weight.T for u in units], dim=1) for b in branches]),
            "units_b": torch.stack([torch.cat([getattr(b, u).bias for u in units]) for b in branches])[:, None],
            "out": torch.stack([branch.out.weight.T for branch in branches]),
            "out_b": torch.stack([branch.out.bias for branch in branches])[:, None],
            "head": weight.reshape(2, -1, 1),
            "head_b": self.head.bias,
        }
        return {name: value.detach().to(dtype).contiguous() for name, value in packed.items()}

    def regularised_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(kernels, biases) that the authors' training L1-regularises: the first and the 64->32 layer of each
        branch."""
        layers = [layer for branch in (self.values, self.differences) for layer in (branch.inp, branch.out)]
        return [layer.weight for layer in layers], [layer.bias for layer in layers]


def tensor_kind(shape: tuple[int, ...] | torch.Size, conv_rule: str = "any_kernel") -> str:
    """Which KNOWN network predicts a tensor: `"bias"` for 1-D tensors, `"conv"` for kernels, `"fc"` otherwise.

    `conv_rule="any_kernel"` sends every tensor of 3 or more dimensions to the conv network (the authors' released
    inference script); `"3x3_only"` sends only kernels with a 3x3 window there and everything else, 1x1 and 7x7
    convs and patch embeddings included, to the FC network (the authors' meta-dataset buckets).
    """
    if conv_rule not in CONV_RULES:
        raise ValueError(f"conv_rule={conv_rule!r} is not one of {CONV_RULES}.")
    if len(shape) <= 1:
        return "bias"
    if conv_rule == "any_kernel":
        return "conv" if len(shape) >= 3 else "fc"
    return "conv" if len(shape) == 4 and tuple(shape[-2:]) == (3, 3) else "fc"


class KnowHyperModel(
    GuardedSaveMixin, nn.Module, PyTorchModelHubMixin, **mixin_metadata(["know", "weight-prediction"], "2508.05059")
):
    """The three KNOWN networks (`conv`, `fc`, `bias`) and the rule routing a tensor to one of them.

    Args:
        window: trajectory length S every network reads (5 in the paper).
        conv_rule: which tensors count as conv kernels, see `tensor_kind`.
        negative_slope: LeakyReLU slope of every branch (0.3, Keras' default).
    """

    def __init__(self, window: int = 5, conv_rule: str = "any_kernel", negative_slope: float = 0.3):
        super().__init__()
        if conv_rule not in CONV_RULES:
            raise ValueError(f"conv_rule={conv_rule!r} is not one of {CONV_RULES}.")
        if window < 2:
            raise ValueError(f"window={window}: KNOWN needs at least 2 trajectory points.")
        self.window = window
        self.conv_rule = conv_rule
        self.nets = nn.ModuleDict({kind: KnownNet(window, negative_slope) for kind in KINDS})
        for net in self.nets.values():
            net.reset_parameters()

    @classmethod
    def is_saved_folder(cls, folder: Path) -> bool:
        try:
            config = json.loads((folder / "config.json").read_text())
            return {"window", "conv_rule"} <= set(config) and (folder / "model.safetensors").is_file()
        except (OSError, ValueError, TypeError):
            return False

    def forward(self, trajectory: torch.Tensor, kind: str) -> torch.Tensor:
        """One retrodiction step: `[N, window]` trajectories (smallest data first) -> `[N]` predicted values."""
        return trajectory[..., -1] + self.nets[kind](trajectory)
