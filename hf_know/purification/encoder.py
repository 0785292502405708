"""A frozen sentence encoder (a transformers encoder with its tokenizer, mean-pooled and L2-normalised).

Routers embed questions with it, the rationale-support score embeds rationales and options, and the RL selector's
state is built from it. It is frozen: embeddings are computed once and cached by the callers, which keeps router
training at CPU scale (the paper fine-tunes an mDeBERTa encoder).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


class SentenceEncoder(nn.Module):
    """`embed(texts)` -> [N, hidden] unit vectors, the mean of the last hidden states over real tokens."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 128):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, max_length: int = 128) -> SentenceEncoder:
        """Load an encoder and its tokenizer from a local folder or a Hub repo."""
        return cls(AutoModel.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path), max_length)

    def save_pretrained(self, folder: str | Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        out = []
        for start in tqdm(range(0, len(texts), batch_size), desc="embed", disable=not progress):
            batch = self.tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.model.device)
            mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)
