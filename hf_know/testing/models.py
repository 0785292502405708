"""Tiny models built from configs, for tests and demos (no downloads)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaForCausalLM,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from ..purification.toy import tiny_llama_student


def tiny_resnet(num_labels: int = 10, num_channels: int = 1, width: int = 8) -> ResNetForImageClassification:
    """A two-stage basic-block transformers ResNet (3x3 convs, 1x1 shortcut) with a fresh head."""
    config = ResNetConfig(
        num_channels=num_channels,
        embedding_size=width,
        hidden_sizes=[width, 2 * width],
        depths=[1, 1],
        layer_type="basic",
        num_labels=num_labels,
    )
    return ResNetForImageClassification(config)


class TinyCNN(nn.Module):
    """A plain `nn.Module` CNN with every conv flavour projection supports: 1d, 2d, 3d, grouped, depthwise,
    pointwise, strided, dilated and reflect-padded convs, plus a linear head."""

    def __init__(self, num_labels: int = 3):
        super().__init__()
        self.conv1d = nn.Conv1d(2, 4, 3, padding=1)
        self.conv = nn.Conv2d(2, 8, 3, stride=2, padding=1, padding_mode="reflect")
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.conv3d = nn.Conv3d(1, 2, (1, 3, 3), padding=(0, 1, 1))
        self.head = nn.Linear(6 + 4 + 2, num_labels)

    def forward(self, x):
        seq = self.conv1d(x.mean(dim=-1)).mean(dim=-1)
        img = self.bn(self.pointwise(self.depthwise(self.grouped(self.conv(x).relu())).relu())).mean(dim=(-2, -1))
        vol = self.conv3d(x[:, :1].unsqueeze(1)).mean(dim=(-3, -2, -1))
        return self.head(torch.cat([img, seq, vol], dim=-1))


def tiny_cnn(num_labels: int = 3) -> TinyCNN:
    """A `TinyCNN` taking inputs of shape [B, 2, H, W]."""
    return TinyCNN(num_labels)


def tiny_bert(
    num_labels: int = 4, vocab_size: int = 100, hidden_size: int = 32, num_hidden_layers: int = 2
) -> BertForSequenceClassification:
    """A small BERT sequence classifier (an encoder with a [CLS] token), two layers by default."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


def tiny_vit(
    num_labels: int = 4, image_size: int = 8, num_channels: int = 1, hidden_size: int = 32, num_attention_heads: int = 2
) -> ViTForImageClassification:
    """A two-layer ViT image classifier with 2x2 patches."""
    config = ViTConfig(
        image_size=image_size,
        patch_size=2,
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        intermediate_size=2 * hidden_size,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config)


def tiny_llama(vocab_size: int = 64) -> LlamaForCausalLM:
    """A two-layer Llama decoder LM (pad 0, eos 1), as the purification toy recipe's student."""
    return tiny_llama_student(vocab_size)
