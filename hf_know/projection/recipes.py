"""Ways to fine-tune an image classifier: projection, the paper's two-stage recipe, and the usual baselines."""

from __future__ import annotations

from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.utils import logging

from .config import ProjectionConfig

logger = logging.get_logger(__name__)
METHODS = ("projection", "projection_then_full", "lora", "ia3", "full", "linear_probe", "bias_only")


def conv_module_names(model: nn.Module, kinds: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Conv3d)) -> list[str]:
    """Names of the model's conv modules of the given kinds (the LoRA / IA3 baselines target these)."""
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def lora_conv_names(model: nn.Module) -> list[str]:
    """The convs peft's LoRA can wrap and merge: stock `nn.Conv2d`/`nn.Conv3d` (LoRA builds its
    low-rank convs as the wrapped layer's class and runs them with its stride and padding) with `groups=1` (peft
    needs r divisible by a grouped conv's groups and cannot merge it). The others are counted in a warning."""
    names, left_out = [], []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            stock = type(module) in (nn.Conv2d, nn.Conv3d)
            (names if stock and module.groups == 1 else left_out).append(name)
    if left_out:
        shown = ", ".join(left_out[:3]) + (", ..." if len(left_out) > 3 else "")
        logger.warning(
            f"LoRA leaves out {len(left_out)} of {len(names) + len(left_out)} convs: grouped convs and conv "
            f"subclasses with their own forward ({shown})."
        )
    return names


def apply_method(
    model: nn.Module,
    method: str,
    head: str = "classifier",
    *,
    lora_r: int = 8,
    skip_pointwise: bool = False,
    train_batchnorm: bool = False,
) -> nn.Module:
    """Prepare `model` for fine-tuning with `method`; the head module `head` is trained in full by every method.

    - `projection` / `projection_then_full`: `ProjectionConfig` on every conv (stage 1 of the two-stage recipe;
      stage 2 is `prepare_full_finetuning`).
    - `lora`: LoRA of rank `lora_r` (alpha = rank) on every conv it can wrap (`lora_conv_names`).
    - `ia3`: IA3 scaling of every Conv2d/Conv3d output.
    - `full`: every parameter trains. `linear_probe`: only the head. `bias_only`: biases (BitFit) and the head.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown fine-tuning method {method!r}; expected one of {METHODS}.")
    if head not in dict(model.named_modules()):
        raise ValueError(f"The model has no module named {head!r} to use as the head.")
    if method in ("projection", "projection_then_full"):
        config = ProjectionConfig(
            modules_to_save=[head], skip_pointwise=skip_pointwise, train_batchnorm=train_batchnorm
        )
        return get_peft_model(model, config)
    if method == "lora":
        config = LoraConfig(r=lora_r, lora_alpha=lora_r, target_modules=lora_conv_names(model), modules_to_save=[head])
        return get_peft_model(model, config)
    if method == "ia3":
        config = IA3Config(target_modules=conv_module_names(model), feedforward_modules=[], modules_to_save=[head])
        return get_peft_model(model, config)
    for name, parameter in model.named_parameters():
        in_head = name.startswith(head + ".")
        if method == "full":
            parameter.requires_grad_(True)
        elif method == "linear_probe":
            parameter.requires_grad_(in_head)
        else:  # bias_only
            parameter.requires_grad_(in_head or name.endswith(".bias"))
    return model


def prepare_full_finetuning(model: PeftModel, safe_merge: bool = True) -> nn.Module:
    """Fold the trained gammas into the conv weights and make every parameter trainable.

    Stage 1 trains the gammas (and `modules_to_save`, e.g. the head) with the backbone frozen; stage 2 fine-tunes
    the whole merged network, starting from the projected solution (the paper reports projection to be an
    effective initialisation for full fine-tuning, much like LP-FT). The returned model is a plain transformers /
    torch model with the base model's architecture, ready for any trainer.

    Args:
        model: a `PeftModel` holding a trained projection adapter.
        safe_merge: refuse the merge if a gamma is not finite (default `True`).
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"prepare_full_finetuning expects a PeftModel with a projection adapter, got {type(model)}.")
    merged = model.merge_and_unload(safe_merge=safe_merge)
    merged.requires_grad_(True)
    return merged
