"""The embedding pass of PROTEUS retrieval (arXiv 2603.13235): pooled hidden states at a chosen block of the model,
through the frozen backbone or through given tasks' modules, computed by a forward pass (cut after that block where
the stack allows it).

The model's block stack (transformer layers, CNN stages: the first `nn.ModuleList` of modules of one class) is swapped
for its first blocks for the length of the pass, so the blocks above the feature layer never run, when its blocks
are alike (the same parameter shapes, as transformer layers are: what follows the stack then takes the output of any
block); a stack whose blocks change width (CNN stages) runs whole. The hidden state is read by a hook on the block at
the feature layer. The pass never sees labels, routing ids or a generation cache.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn
from transformers.cache_utils import Cache

# Keyword arguments that are model inputs with a batch dimension, in the order they are looked for.
BATCHED_INPUTS = ("input_ids", "inputs_embeds", "pixel_values", "input_values", "input_features")
POOLINGS = ("cls", "mean", "last_token")


def block_stack(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute name, blocks) of the model's block stack: the first ModuleList of identical modules."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ModuleList) and len(child) and len({type(block) for block in child}) == 1:
                return parent, name, child
    raise ValueError(
        f"Cannot find the block stack (an nn.ModuleList of layers) of {type(model).__name__}, so feature_layer "
        "cannot be located; retrieval needs a transformers-style model."
    )


def feature_block(depth: int, feature_layer: int) -> int:
    """Hidden state index in [0, depth] of `feature_layer` (0 = embeddings output, depth or -1 = last block)."""
    if not -(depth + 1) <= feature_layer <= depth:
        raise ValueError(
            f"feature_layer={feature_layer} is out of range for a model with {depth} blocks: expected an index in "
            f"[{-(depth + 1)}, {depth}] (0 = embeddings output, {depth} or -1 = last block)."
        )
    return feature_layer % (depth + 1)


@contextlib.contextmanager
def hidden_state_at(model: nn.Module, feature_layer: int) -> Iterator[dict]:
    """Within the block, a forward of `model` runs its blocks up to hidden state `feature_layer` only (see
    `feature_block`) and leaves that state in the yielded dict under `"hidden"`: the input of that block, or the
    output of the last block."""
    parent, name, blocks = block_stack(model)
    layer = feature_block(len(blocks), feature_layer)
    captured: dict = {}
    if layer < len(blocks):  # hidden state `layer` is block `layer`'s input: keep that block to read its input

        def read_input(module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]

        handle = blocks[layer].register_forward_pre_hook(read_input, with_kwargs=True)
        kept = blocks[: layer + 1] if _alike(blocks) else blocks
    else:

        def read_output(module, args, output):
            captured["hidden"] = output[0] if isinstance(output, tuple | list) else output

        kept, handle = blocks, blocks[-1].register_forward_hook(read_output)
    setattr(parent, name, nn.ModuleList(kept))
    try:
        yield captured
    finally:
        handle.remove()
        setattr(parent, name, blocks)


def _alike(blocks: nn.ModuleList) -> bool:
    """Whether every block has the same parameter shapes (so any block's output fits what follows the stack)."""
    return len({tuple(p.shape for p in block.parameters()) for block in blocks}) == 1


def embedding_inputs(model: nn.Module, kwargs: dict) -> dict:
    """The forward's inputs for an embedding pass: no labels, no routing ids, and never a generation cache, so the
    pass neither reads nor extends the cache the real forward is about to use."""
    kwargs = {
        k: v
        for k, v in kwargs.items()
        if k not in ("labels", "adapter_names", "past_key_values") and not isinstance(v, Cache)
    }
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    return kwargs


def caches(kwargs: dict) -> list[Cache]:
    """The generation caches among a forward's arguments, whatever the model calls them (`past_key_values`
    before transformers 5.24, `cache` since)."""
    return [value for value in kwargs.values() if isinstance(value, Cache)]


def continues_generation(kwargs: dict) -> bool:
    """Whether a forward is a decoding step after the prompt (its cache already holds tokens)."""
    return any(cache.get_seq_length() > 0 for cache in caches(kwargs))


def batch_size(args: tuple, kwargs: dict) -> int:
    for value in (*args, *(kwargs.get(k) for k in BATCHED_INPUTS), *kwargs.values()):
        if torch.is_tensor(value) and value.dim() > 0:
            return value.shape[0]
    raise ValueError("Cannot route a forward pass with no batched tensor input (input_ids, pixel_values, ...).")


def repeat_batch(value, copies: int, batch: int):
    """`value` repeated `copies` times along the batch dimension, if it has one of size `batch`."""
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    return value


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """[B, T, D] token states (or [B, C, *spatial] conv maps) to [B, D]."""
    if hidden.dim() > 3 or hidden.dim() == 2:
        return hidden.flatten(2).mean(-1) if hidden.dim() > 3 else hidden
    mask = attention_mask if attention_mask is not None and attention_mask.shape == hidden.shape[:2] else None
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        if mask is None:
            return hidden[:, -1]
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mask is None:
        return hidden.mean(1)
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
