"""What the PEFT methods of this package share when an adapter is loaded onto a base model."""

from __future__ import annotations

import torch
from torch import nn


class ShapeCheckedLoadMixin:
    """Mixed into a `BaseTuner`: refuse an adapter whose tensors do not fit the base model, naming each tensor.

    Without it, loading onto a base model of another shape fails deep inside `load_state_dict` with a message that
    names neither the adapter nor what was expected.
    """

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        expected = model.state_dict()
        mismatches = [
            f"{key}: adapter {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
            for key, value in remapped.items()
            if key in expected and expected[key].shape != value.shape
        ]
        if mismatches:
            raise ValueError(
                f"Adapter {adapter_name!r} does not fit this base model: {len(mismatches)} tensor(s) have other "
                "shapes than the model's (it was trained on a base model with other layer shapes): "
                + "; ".join(mismatches[:10])
                + (" ..." if len(mismatches) > 10 else "")
            )
        return remapped
