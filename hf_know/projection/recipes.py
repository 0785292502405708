"""The paper's two-stage recipe: projection first, then full fine-tuning from the merged weights."""

from __future__ import annotations

from peft import PeftModel
from torch import nn


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
