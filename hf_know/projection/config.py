"""Configuration of model projection (Ewen, Diaz-Rodriguez and Ramsay, arXiv 2602.06245)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft import PeftConfig

from .._peft_registry import add_peft_type

ALL_CONV = "all-conv"
BIAS_CHOICES = ("none", "all", "projection_only")


@dataclass
class ProjectionConfig(PeftConfig):
    """Configuration of a [`ProjectionModel`].

    Model projection freezes every pretrained conv filter slice W[o, i] (the kernel that carries input channel i
    into output channel o) and learns one scalar gamma[o, i] per (output, input) channel pair, so the effective
    weight is W * gamma broadcast over the kernel. gamma starts at 1, so the adapted model starts exactly at the
    pretrained one, and the projected layer is an ordinary feed-forward layer over the frozen filter responses.

    Trainable parameters per conv are C_out * C_in / groups. On a k x k conv with k > 1 that is 1 / k**2 of full
    fine-tuning; on a 1 x 1 (pointwise) conv it equals full fine-tuning of that layer, which is why bottleneck
    ResNets and ConvNeXt train many more gammas than basic-block ResNets (see `skip_pointwise` and the README).

    Args:
        target_modules (`Optional[Union[list[str], str]]`):
            The conv modules to project. `None` (default) or `"all-conv"` projects every `nn.Conv1d`, `nn.Conv2d`
            and `nn.Conv3d` of the model. A list matches module names exactly or by suffix, a string is a regex,
            as everywhere in PEFT. Matching a module that is not a conv (e.g. `nn.Linear`) is an error: train such
            modules in full through `modules_to_save`.
        exclude_modules (`Optional[Union[list[str], str]]`):
            Module names (list, suffix match) or a regex of modules never to project.
        skip_pointwise (`bool`):
            Leave 1x1 convs out. On a 1x1 conv one scalar per (output, input) pair has as many parameters as the
            weight itself, so projecting it is a reparametrised full fine-tune of that layer.
        skip_depthwise (`bool`):
            Leave depthwise convs (groups == in_channels > 1) out; there gamma has one entry per channel and mostly
            duplicates the affine parameters of the following norm layer.
        train_batchnorm (`bool`):
            Train the BatchNorm layers (affine parameters and running statistics) and save them with the adapter.
            By default they stay frozen: affine parameters fixed and, unlike plain PEFT, running statistics too
            (frozen BatchNorm layers stay in eval mode), so the saved adapter reproduces the trained model exactly.
        bias (`str`):
            Which conv biases to train: `"none"` (default), `"all"` biases of the model, or `"projection_only"`,
            the biases of the projected convs. Trained biases are saved with the adapter.
        modules_to_save (`Optional[list[str]]`):
            Modules trained in full and saved with the adapter, typically the new classifier head
            (`["classifier"]` for transformers' image classifiers).
        init_weights (`bool`):
            `True` (default) starts every gamma at 1, so the adapted model's outputs equal the base model's exactly.
            `False` draws gamma from N(1, 0.1^2); only useful for tests.
    """

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Conv modules to project: None or 'all-conv' for every Conv1d/2d/3d, a list of names (exact or "
                "suffix match) or a regex. Non-conv modules belong in `modules_to_save`."
            )
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names (list) or regex of modules never to project."}
    )
    skip_pointwise: bool = field(
        default=False,
        metadata={"help": "Leave 1x1 convs out: projecting them is a full fine-tune of those layers."},
    )
    skip_depthwise: bool = field(
        default=False,
        metadata={"help": "Leave depthwise convs (groups == in_channels > 1) out."},
    )
    train_batchnorm: bool = field(
        default=False,
        metadata={"help": "Train and save every BatchNorm layer (frozen by default)."},
    )
    bias: Literal["none", "all", "projection_only"] = field(
        default="none", metadata={"help": "Conv biases to train: 'none', 'all' or 'projection_only'."}
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Modules trained in full and saved with the adapter, e.g. ['classifier']."},
    )
    init_weights: bool = field(
        default=True,
        metadata={"help": "Start gamma at 1 (identity). False draws gamma ~ N(1, 0.1^2), for tests only."},
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_peft_type("PROJECTION")
        for name in ("skip_pointwise", "skip_depthwise", "train_batchnorm", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ProjectionConfig.{name} must be a bool, got {getattr(self, name)!r}.")
        if self.bias not in BIAS_CHOICES:
            raise ValueError(f"ProjectionConfig.bias must be one of {BIAS_CHOICES}, got {self.bias!r}.")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple, set)):
                if not all(isinstance(item, str) for item in value):
                    raise TypeError(f"ProjectionConfig.{name} must hold module names (str), got {value!r}.")
                if not value:
                    raise ValueError(f"ProjectionConfig.{name} is empty; use None to project every conv.")
                setattr(self, name, set(value))
            elif value is not None and not isinstance(value, str):
                raise TypeError(f"ProjectionConfig.{name} must be None, a str or a list of str, got {value!r}.")
        if self.modules_to_save is not None and isinstance(self.modules_to_save, str):
            raise TypeError(
                f"ProjectionConfig.modules_to_save must be a list of module names, got the string "
                f"{self.modules_to_save!r}; write [{self.modules_to_save!r}]."
            )
