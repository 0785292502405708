"""Projected conv layers: a frozen conv whose filter slices W[o, i] are rescaled by trainable gamma[o, i]."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

# Conv hyper-parameters that models read off their conv layers (e.g. TF "same" padding in MobileNetV2).
CONV_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
)
# Below this magnitude, dividing a merged weight by gamma cannot recover the original filter.
UNMERGE_EPS = 1e-6


class ProjectionLayer(BaseTunerLayer):
    """Mixin holding one gamma of shape [C_out, C_in / groups] per adapter for a wrapped conv."""

    adapter_layer_names = ("projection_gamma",)

    def __init__(self, base_layer: nn.Module, **kwargs) -> None:
        self.base_layer = base_layer
        self.projection_gamma = nn.ParameterDict({})
        self._disable_adapters = False
        self.merged_adapters = []
        base_layer = self.get_base_layer()
        self.in_features = base_layer.in_channels
        self.out_features = base_layer.out_channels

    def update_layer(self, adapter_name: str, init_weights: bool = True, inference_mode: bool = False) -> None:
        weight = self.get_base_layer().weight
        shape = weight.shape[:2]
        gamma = torch.ones(shape) if init_weights else 1.0 + 0.1 * torch.randn(shape)
        self.projection_gamma[adapter_name] = nn.Parameter(gamma)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def _kernel_scale(self, adapter_names: list[str]) -> torch.Tensor:
        """The product of the adapters' gammas, shaped to broadcast over the conv weight's kernel dims."""
        weight = self.get_base_layer().weight
        scale = self.projection_gamma[adapter_names[0]]
        for name in adapter_names[1:]:
            scale = scale * self.projection_gamma[name]
        return scale.reshape(*scale.shape, *([1] * (weight.dim() - 2))).to(weight.dtype)


class _ConvNd(nn.Module, ProjectionLayer):
    """Shared implementation of the projected Conv1d / Conv2d / Conv3d."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, init_weights: bool = True, **kwargs) -> None:
        super().__init__()
        ProjectionLayer.__init__(self, base_layer, **kwargs)
        for name in CONV_ATTRIBUTES:
            setattr(self, name, getattr(self.get_base_layer(), name))
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, init_weights=init_weights)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold gamma into the conv weight (W <- W * gamma). Exact: the merged conv computes what the adapter did.

        Args:
            safe_merge: compute the merged weight out of place and refuse it if it is not finite.
            adapter_names: adapters to merge; the active ones by default.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base_layer = self.get_base_layer()
        for name in adapter_names:
            if name not in self.projection_gamma:
                continue
            merged = base_layer.weight.data * self._kernel_scale([name])
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(
                    f"Merging adapter {name!r} gives non-finite weights in a {type(base_layer).__name__} of "
                    f"weight shape {tuple(base_layer.weight.shape)}: its projection_gamma has NaN or inf entries."
                )
            base_layer.weight.data = merged
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Divide the merged gammas back out of the weight.

        Inexact in floating point, and lossy where |gamma| < 1e-6: a filter scaled to (almost) zero cannot be
        recovered, so it is left as merged and a warning is raised.
        """
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        base_layer = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name not in self.projection_gamma:
                continue
            scale = self._kernel_scale([name])
            invertible = scale.abs() >= UNMERGE_EPS
            if not invertible.all():
                warnings.warn(
                    f"Adapter {name!r} has |gamma| < {UNMERGE_EPS} for {int((~invertible).sum())} channel pairs; "
                    "those filters cannot be recovered by unmerge and stay as merged.",
                    stacklevel=2,
                )
            base_layer.weight.data = torch.where(invertible, base_layer.weight.data / scale, base_layer.weight.data)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        active = [name for name in self.active_adapters if name in self.projection_gamma]
        if self.merged or not active:
            return self.base_layer(x, *args, **kwargs)
        base_layer = self.get_base_layer()
        weight = base_layer.weight * self._kernel_scale(active)
        if type(base_layer).forward is STOCK_FORWARD[type(self)]:
            # `_conv_forward` is the stock conv's own routine: stride, padding, padding_mode, dilation and groups.
            return base_layer._conv_forward(x.to(weight.dtype), weight, base_layer.bias)
        # A subclass with its own forward (weight standardisation, "same" padding, ...): run that forward with the
        # projected weight in place of its own.
        return torch.func.functional_call(base_layer, {"weight": weight}, (x, *args), kwargs)

    def __repr__(self) -> str:
        return "projection." + super().__repr__()


class Conv1d(_ConvNd):
    """Projection of an `nn.Conv1d`."""


class Conv2d(_ConvNd):
    """Projection of an `nn.Conv2d`."""


class Conv3d(_ConvNd):
    """Projection of an `nn.Conv3d`."""


LAYER_CLASSES: dict[type[nn.Module], type[_ConvNd]] = {
    nn.Conv1d: Conv1d,
    nn.Conv2d: Conv2d,
    nn.Conv3d: Conv3d,
}
# The forward of the stock conv each projected class wraps; a subclass that overrides it runs through its own.
STOCK_FORWARD = {cls: conv.forward for conv, cls in LAYER_CLASSES.items()}
