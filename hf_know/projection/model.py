"""The PEFT tuner for model projection."""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_target_module_exists
from peft.utils import ModulesToSaveWrapper
from torch import nn
from transformers.pytorch_utils import Conv1D

from .._adapter_loading import CheckedLoadMixin
from .config import ALL_CONV, ProjectionConfig
from .layer import LAYER_CLASSES, ProjectionLayer

# Submodule names under which a wrapper keeps modules that must not be targeted again.
_WRAPPER_INTERNALS = ("base_layer", "original_module", "modules_to_save")


class ProjectionModel(CheckedLoadMixin, BaseTuner):
    """Wraps the conv layers of a model in projected convs (see [`ProjectionConfig`]).

    Create it through `peft.get_peft_model(model, ProjectionConfig())` after `import hf_know`. Targets are found by
    module type, so any model with `nn.Conv1d/2d/3d` layers works without a per-architecture mapping: transformers'
    ResNet, ConvNeXt, MobileNetV2, RegNet and EfficientNet, or a plain `nn.Module` CNN.

    Example:

        ```py
        >>> import hf_know  # registers the method with PEFT
        >>> from peft import get_peft_model
        >>> from transformers import ResNetConfig, ResNetForImageClassification
        >>> model = ResNetForImageClassification(ResNetConfig(num_labels=10))
        >>> model = get_peft_model(model, hf_know.ProjectionConfig(modules_to_save=["classifier"]))
        >>> model.print_trainable_parameters()
        ```
    """

    prefix: str = "projection_"
    tuner_layer_cls = ProjectionLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: ProjectionConfig, model_config: dict) -> ProjectionConfig:
        # Targets are resolved by module type in `_prepare_model`, which sees the model; nothing to look up here.
        return peft_config

    def _prepare_model(self, peft_config: ProjectionConfig, model: nn.Module) -> None:
        """Resolve the targets into explicit conv names (saved in adapter_config.json) and validate them."""
        peft_config.target_modules = self._resolve_targets(peft_config, model)
        if peft_config.train_batchnorm:
            norms = [
                name
                for name, module in model.named_modules()
                if not _is_wrapper_internal(name)
                and isinstance(
                    module.original_module if isinstance(module, ModulesToSaveWrapper) else module,
                    nn.modules.batchnorm._BatchNorm,
                )
            ]
            peft_config.modules_to_save = sorted(set(peft_config.modules_to_save or []) | set(norms))

    @staticmethod
    def _resolve_targets(config: ProjectionConfig, model: nn.Module) -> set[str]:
        select_all = config.target_modules is None or config.target_modules == ALL_CONV
        # Selecting by type: match every name, then keep the convs; exclusions and modules_to_save still apply.
        matcher = replace(config, target_modules=r".*") if select_all else config
        targets, convs, transposed = set(), [], []
        for name, module in model.named_modules():
            if not name or _is_wrapper_internal(name) or isinstance(module, ModulesToSaveWrapper):
                continue
            base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
            is_conv = isinstance(base, tuple(LAYER_CLASSES))
            if select_all and isinstance(base, nn.modules.conv._ConvTransposeNd):
                transposed.append(name)
            if is_conv:
                convs.append(name)
            if not check_target_module_exists(matcher, name) or (select_all and not is_conv):
                continue
            if not is_conv:
                raise TypeError(_not_a_conv_message(name, base))
            if config.skip_pointwise and all(k == 1 for k in base.kernel_size):
                continue
            if config.skip_depthwise and base.groups > 1 and base.groups == base.in_channels:
                continue
            targets.add(name)
        if transposed:
            warnings.warn(
                f"ProjectionConfig leaves {len(transposed)} transposed conv layer(s) of {type(model).__name__} "
                f"unprojected and frozen: {transposed[:10]}{' ...' if len(transposed) > 10 else ''}. Projection "
                "applies to nn.Conv1d/2d/3d; list them in modules_to_save to train them.",
                stacklevel=2,
            )
        if not targets:
            raise ValueError(
                f"ProjectionConfig(target_modules={config.target_modules!r}, exclude_modules="
                f"{config.exclude_modules!r}, skip_pointwise={config.skip_pointwise}, skip_depthwise="
                f"{config.skip_depthwise}) selects no conv layer of {type(model).__name__}. Its conv layers are: "
                f"{convs[:10]}{' ...' if len(convs) > 10 else ''}."
            )
        return targets

    def train(self, mode: bool = True) -> ProjectionModel:
        """Set train / eval mode; frozen BatchNorm layers always stay in eval mode.

        A frozen BatchNorm (the default, see `ProjectionConfig.train_batchnorm`) normalises with the pretrained
        running statistics and never updates them, so the saved adapter (gammas + `modules_to_save`) reproduces the
        trained model exactly. In plain PEFT a frozen BatchNorm keeps updating its statistics in train mode, and
        those updates are lost on save.
        """
        super().train(mode)
        for name, module in self.model.named_modules():
            is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            if is_norm and not _is_wrapper_internal(name) and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def _create_and_replace(
        self,
        peft_config: ProjectionConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs,
    ) -> None:
        if isinstance(target, ProjectionLayer):
            target.update_layer(
                adapter_name, init_weights=peft_config.init_weights, inference_mode=peft_config.inference_mode
            )
            return
        layer_cls = next(cls for conv, cls in LAYER_CLASSES.items() if isinstance(target, conv))
        new_module = layer_cls(target, adapter_name, init_weights=peft_config.init_weights)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        """Swap `child` for `new_module`; projected layers already live on their base weight's device.

        `BaseTuner._replace_module` also copies `child.weight` onto replacements without a base layer, which breaks
        `merge_and_unload` when `modules_to_save` wraps a head that has no weight of its own, such as the
        `Sequential(Flatten, Linear)` classifier of transformers' image models (LoRA overrides it the same way).
        """
        setattr(parent, child_name, new_module)

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        if safe_merge:
            self._check_gammas_finite(adapter_names)
        super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        if merge and safe_merge:
            self._check_gammas_finite(adapter_names)
        return super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )

    def _check_gammas_finite(self, adapter_names: list[str] | None) -> None:
        """Refuse a safe merge before touching any weight, naming every gamma with NaN or inf entries."""
        names = adapter_names or self.active_adapters
        broken = [
            f"{module_name}.projection_gamma.{adapter} ({int((~torch.isfinite(gamma)).sum())} of {gamma.numel()})"
            for module_name, module in self.model.named_modules()
            if isinstance(module, ProjectionLayer)
            for adapter, gamma in module.projection_gamma.items()
            if adapter in names and not torch.isfinite(gamma).all()
        ]
        if broken:
            raise ValueError(
                "safe_merge refused: these projection gammas hold non-finite (NaN/inf) entries: "
                + ", ".join(broken)
                + ". Expected finite gammas; check the training run that produced them."
            )


def _is_wrapper_internal(name: str) -> bool:
    return any(part in _WRAPPER_INTERNALS for part in name.split("."))


def _not_a_conv_message(name: str, module: nn.Module) -> str:
    kind = type(module).__name__
    hint = ""
    if isinstance(module, (nn.Linear, nn.Embedding, Conv1D)):
        hint = (
            f" A per-entry scalar on a {kind} would be full fine-tuning of it; to train it, list it in "
            f"modules_to_save=[{name.rsplit('.', 1)[-1]!r}] instead."
        )
    return (
        f"ProjectionConfig.target_modules matches {name!r}, a {kind}, but projection applies to nn.Conv1d, "
        f"nn.Conv2d and nn.Conv3d only.{hint}"
    )
