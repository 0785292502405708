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
LOG2_E = 1 / math.log(2)
# Rows KNOWN evaluates at once on a CPU, split across torch's threads: small enough for the activations to stay in
# cache, large enough to amortise each op's dispatch (measured on 2 cores: 4096 rows run ~1.4x as fast as 1024).
KNOWN_BATCH = 4096
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
        """`forward` for inference, 1.3-1.8x as fast on CPU (measured at 4096 rows on 2 cores): both branches as one
        batched matmul per layer, the difference operator folded into the first layer, the squeeze layer computed from
        the trajectory directly (both are affine in it), the coefficient and exponent layers as one matmul, the
        additive layer folded into the out layer (both are linear after the exp unit's sum), `exp` as `exp2` with
        `log2(e)` folded into the exponent layer (torch's CPU `exp2` is ~3x faster), the head as two matrix-vector
        products, in-place activations. Equal to `forward` up to float rounding wherever float32 holds the exp
        units' values.

        Range-safe: rows whose float32 result is not finite (the exp units overflow for weights of magnitude above
        a few tens) are recomputed in float64 with the exponent capped at `EXP_LIMIT`, so every finite trajectory
        gets a finite step."""
        return self._range_safe(
            trajectory, lambda rows, dtype, limit: self._fast_forward(rows, self._packed(dtype), limit)
        )

    @torch.inference_mode()
    def retrodict(self, trajectory: torch.Tensor, steps: int) -> torch.Tensor:
        """The newest value after `steps` KNOWN steps, the window sliding over its own predictions (the paper's
        recursion): `[N, window]` -> `[N]`, in the trajectory's dtype. A CPU runs `KNOWN_BATCH` rows at a time
        through all the steps, a GPU every row at once. Range-safe like `fast_forward`, row by row over all the
        steps."""
        if steps < 1:
            raise ValueError(f"steps={steps}: expected a positive number of KNOWN steps.")

        def run(rows: torch.Tensor, dtype: torch.dtype, limit: float | None) -> torch.Tensor:
            packed = self._packed(dtype)
            out = rows.new_empty(len(rows))
            batch = KNOWN_BATCH if rows.device.type == "cpu" else max(len(rows), 1)
            for start in range(0, len(rows), batch):
                window = rows[start : start + batch]
                for _ in range(steps - 1):
                    predicted = window[:, -1] + self._fast_forward(window, packed, limit)
                    window = torch.cat([window[:, 1:], predicted[:, None]], dim=1)
                torch.add(window[:, -1], self._fast_forward(window, packed, limit), out=out[start : start + batch])
            return out

        return self._range_safe(trajectory, run)

    @staticmethod
    def _range_safe(trajectory: torch.Tensor, run) -> torch.Tensor:
        """`run(rows, dtype, exp_limit)` in float32, then again in float64 with the exponent capped for the rows
        whose float32 result is not finite."""
        values = run(trajectory, torch.float32, None)
        overflowed = ~torch.isfinite(values)
        if overflowed.any():
            values[overflowed] = run(trajectory[overflowed].to(torch.float64), torch.float64, EXP_LIMIT).to(values)
        return values

    def _fast_forward(self, trajectory: torch.Tensor, packed: dict, exp_limit: float | None) -> torch.Tensor:
        x = trajectory.to(packed["inp"].dtype).expand(2, *trajectory.shape)
        h = torch.baddbmm(packed["inp_b"], x, packed["inp"])
        c = torch.baddbmm(packed["squeeze_b"], x, packed["squeeze"]).relu_()
        exponent, coefficient = torch.baddbmm(packed["units_b"], c, packed["units"]).chunk(2, dim=-1)
        exponent = exponent.mul_(h)  # log2(e) * exponent(c) * h
        if exp_limit is not None:
            exponent.clamp_(max=exp_limit * LOG2_E)
        g = exponent.exp2_().mul_(coefficient)
        z = torch.baddbmm(torch.baddbmm(packed["out_b"], c, packed["additive_out"]), g, packed["out"])
        z = nn.functional.leaky_relu_(z, self.negative_slope)
        head = packed["head"]
        return torch.mv(z[0], head[0]).add_(torch.mv(z[1], head[1])).add_(packed["head_b"]).tanh_()

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
        branches = (self.values, self.differences)

        # differences = trajectory @ eye.diff(), so the difference branch's first layer absorbs the operator.
        difference_operator = torch.eye(self.window, dtype=weight.dtype, device=weight.device).diff(dim=1)
        operators = (torch.eye(self.window, dtype=weight.dtype, device=weight.device), difference_operator)

        def stacked(layer: str) -> tuple[torch.Tensor, torch.Tensor]:  # `[2, in, out]` weights, `[2, 1, out]` biases
            layers = [getattr(branch, layer) for branch in branches]
            weights = [m.weight.T for m in layers]
            if layer == "inp":
                weights = [operator @ w for operator, w in zip(operators, weights, strict=True)]
            return torch.stack(weights), torch.stack([m.bias for m in layers])[:, None]

        inp, inp_b = stacked("inp")
        squeeze, squeeze_b = stacked("squeeze")
        exponent, exponent_b = stacked("exponent")
        coefficient, coefficient_b = stacked("coefficient")
        additive, additive_b = stacked("additive")
        out, out_b = stacked("out")
        packed = {
            "inp": inp,
            "inp_b": inp_b,
            # squeeze(inp(x)) is affine in x: one [window, bottleneck] matmul instead of two.
            "squeeze": inp @ squeeze,
            "squeeze_b": inp_b @ squeeze + squeeze_b,
            # exp(a) = exp2(log2(e) a): the exponent layer absorbs the factor.
            "units": torch.cat([exponent * LOG2_E, coefficient], dim=-1),
            "units_b": torch.cat([exponent_b * LOG2_E, coefficient_b], dim=-1),
            # out(additive(c) + u) = c @ (additive @ out) + out(u): the additive layer folds into the out layer.
            "additive_out": additive @ out,
            "out": out,
            "out_b": additive_b @ out + out_b,
            "head": weight.reshape(2, -1),
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
