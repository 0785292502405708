"""What the PEFT methods of this package share when an adapter is loaded onto a base model."""

from __future__ import annotations

import re

import torch
from torch import nn


class CheckedLoadMixin:
    """Mixed into a `BaseTuner`: an adapter loads complete or not at all, with the offending tensors named.

    Refused: tensors whose shapes differ from the model's (it was trained on a base model with other layer shapes);
    tensors the method needs that the file lacks (a layer's `adapter_layer_names` entries, or the tuner-level
    `adapter_state_containers`, for this adapter); tensors of those containers that have no place in this model
    (another architecture or other target modules); NaN or infinite values in them. Loaded anyway, such an adapter
    would compute something else than the one that was saved, with only a warning. Without the shape check, a
    mismatch fails deep inside `load_state_dict` with a message that names neither the adapter nor what was expected.
    """

    # Containers on the tuner itself (not on its layers) that hold per-adapter state, e.g. PROTEUS's signatures.
    adapter_state_containers: tuple[str, ...] = ()

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
        containers = "|".join(map(re.escape, (*cls.tuner_layer_cls.adapter_layer_names, *cls.adapter_state_containers)))
        ours = re.compile(rf"\.({containers})\.{re.escape(adapter_name)}(\.|$)")
        anyone = re.compile(rf"\.({containers})(\.|$)")  # a key the remapping could not give an adapter name
        needed = {key for key in expected if ours.search(key)}
        loaded = {key for key in remapped if anyone.search(key)}
        missing, unexpected = sorted(needed - loaded), sorted(loaded - needed)
        if missing or unexpected:
            problems = []
            if missing:
                problems.append(f"{len(missing)} tensor(s) it needs are missing from the file: {missing[:5]}")
            if unexpected:
                problems.append(
                    f"{len(unexpected)} tensor(s) of the file have no place in this model (another architecture or "
                    f"target_modules?): {unexpected[:5]}"
                )
            raise ValueError(f"Adapter {adapter_name!r} does not match this model: " + "; ".join(problems) + ".")
        broken = sorted(k for k in loaded if remapped[k].is_floating_point() and not torch.isfinite(remapped[k]).all())
        if broken:
            raise ValueError(
                f"Adapter {adapter_name!r} holds NaN or infinite values in {broken[:5]}; expected finite adapter "
                "weights."
            )
        return remapped
