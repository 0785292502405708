"""The shared base of the routing purifiers: a frozen sentence encoder, one score per teacher, Hub save/load.

A router sees only the question (and, for the RL selector, the rationales), so on new data only the routed
teacher needs to be sampled. Saved as a Hub model folder: `config.json` (teachers and hyper-parameters),
`model.safetensors` (the router's own weights and buffers) and `encoder/` (the sentence encoder and its tokenizer),
so `from_pretrained` needs nothing but that folder or repo.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import torch
from datasets import Dataset
from huggingface_hub import ModelCard, ModelHubMixin, snapshot_download
from huggingface_hub.constants import CONFIG_NAME
from safetensors.torch import load_file, save_file
from torch import nn

from ..hub import mixin_metadata, render_model_card
from ..io import GuardedSaveMixin
from .data import validate_rationale_data
from .encoder import SentenceEncoder
from .purifier import select_rationales
from .support import teacher_scores

WEIGHTS_NAME = "model.safetensors"
ENCODER_FOLDER = "encoder"


def best_teacher_targets(scores: torch.Tensor) -> torch.Tensor:
    """[rows, teachers] target distribution, uniform over each row's best-scoring teachers (NaN never best)."""
    filled = scores.nan_to_num(-math.inf)
    best = (filled == filled.max(dim=1, keepdim=True).values) & ~scores.isnan()
    return best.float() / best.float().sum(1, keepdim=True).clamp(min=1.0)


class TeacherRouter(
    GuardedSaveMixin, nn.Module, ModelHubMixin, **mixin_metadata(["knowledge-purification", "router"], "2602.01064")
):
    """Route each question to one teacher. Subclasses define `method`, `teacher_logits`, and `routing_loss` (trained
    by the shared minibatch loop of `_fit`) or their own `_fit`.

    Args:
        teachers: teacher names, in the order of the data's `rationales`.
        encoder: the frozen sentence encoder embedding questions (and scoring rationales when the data has no
            unforced answers).
    """

    method: ClassVar[str]

    def __init__(self, teachers: list[str], encoder: SentenceEncoder):
        super().__init__()
        if len(teachers) < 2:
            raise ValueError(f"A router chooses among at least 2 teachers, got teachers={teachers}.")
        self.teachers = list(teachers)
        self.encoder = encoder
        self.register_buffer("embedding_mean", torch.zeros(encoder.dim))

    def features(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Question embeddings centred on the training questions' mean and renormalised: sentence embeddings share
        a large common component, which would otherwise drown the differences routing depends on."""
        return nn.functional.normalize(embeddings - self.embedding_mean, dim=-1)

    def teacher_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[rows, teachers] routing logits from [rows, dim] question `features`."""
        raise NotImplementedError

    def routing_loss(self, features: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The training loss of one minibatch: question features, their teacher scores, their training-row indices."""
        raise NotImplementedError

    def _fit(
        self,
        features: torch.Tensor,
        scores: torch.Tensor,
        epochs: int = 30,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        seed: int = 0,
    ) -> None:
        """Minibatch AdamW on `routing_loss` over the router's own parameters (the encoder stays frozen)."""
        self.generator = torch.Generator().manual_seed(seed)
        parameters = [p for name, p in self.named_parameters() if not name.startswith("encoder.")]
        optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
        for _ in range(epochs):
            for batch in torch.randperm(len(features), generator=self.generator).split(batch_size):
                loss = self.routing_loss(features[batch], scores[batch], batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    def check_teachers(self, dataset: Dataset) -> None:
        width = len(dataset[0]["rationales"])
        if width != len(self.teachers):
            raise ValueError(
                f"This {self.method} router routes among {len(self.teachers)} teachers {self.teachers}, but the "
                f"data's 'rationales' column has {width} per row; route data from the same teachers."
            )

    def fit(self, dataset: Dataset, scores: torch.Tensor | None = None, **kwargs) -> TeacherRouter:
        """Fit on rows of rationale data; `scores` default to `teacher_scores(dataset, self.encoder)`.

        Raises `ValueError` when the teacher count differs from the data's, or when one teacher is best on every
        row (labels of a single class: there is nothing to route).
        """
        self.check_teachers(dataset)
        validate_rationale_data(dataset, self.teachers)
        scores = teacher_scores(dataset, self.encoder) if scores is None else scores
        if scores.shape != (len(dataset), len(self.teachers)):
            raise ValueError(f"scores have shape {tuple(scores.shape)}, expected {(len(dataset), len(self.teachers))}.")
        labelled = ~scores.isnan().all(1)
        targets = best_teacher_targets(scores[labelled])
        classes = targets.argmax(1).unique()
        if len(classes) < 2:
            raise ValueError(
                f"Router labels are of a single class: teacher {self.teachers[int(classes[0])]!r} is best on all "
                f"{int(labelled.sum())} labelled rows, so there is nothing to learn. Check the teachers' answers or "
                "scores, or use that teacher's rationales directly (SingleTeacher)."
            )
        embeddings = self.encoder.embed(dataset["question"])[labelled]
        self.embedding_mean = embeddings.mean(0)
        self.train()
        self._fit(self.features(embeddings), scores[labelled], **kwargs)
        return self.eval()

    @torch.no_grad()
    def route(self, questions: list[str]) -> torch.Tensor:
        """[rows, teachers] routing probabilities."""
        return self.teacher_logits(self.features(self.encoder.embed(questions))).softmax(-1)

    def purify(self, dataset: Dataset) -> Dataset:
        """The `Purifier` interface: each row's rationale from its routed teacher (missing rationales skipped)."""
        self.check_teachers(dataset)
        probabilities = self.route(dataset["question"])
        return select_rationales(dataset, probabilities.log(), self.teachers, self.method, probabilities)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The router's card (`model_cards/router.md`): its method, its teachers and how to reuse it."""
        return render_model_card(
            "router", self._hub_mixin_info.model_card_data, method=self.method, teachers=self.teachers
        )

    @classmethod
    def is_saved_folder(cls, folder: Path) -> bool:
        try:
            return "method" in json.loads((folder / CONFIG_NAME).read_text()) and (folder / WEIGHTS_NAME).is_file()
        except (OSError, ValueError, TypeError):
            return False

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        save_file({k: v.contiguous() for k, v in state.items()}, str(save_directory / WEIGHTS_NAME))
        self.encoder.save_pretrained(save_directory / ENCODER_FOLDER)
        # `method` lets `load_router` pick the class; the mixin would otherwise write the init arguments only.
        config = {**(self._hub_mixin_config or {}), "method": self.method}
        (save_directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))

    def load_router_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=False)
        expected = {k for k in self.state_dict() if not k.startswith("encoder.")}
        if expected != set(state):
            raise ValueError(
                f"Router weights do not match a {self.method} router: expected {sorted(expected)}, got {sorted(state)}."
            )

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token, **config):
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(
                snapshot_download(
                    model_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                )
            )
        for injected in ("config", "method"):  # the mixin passes the whole config too; the init arguments suffice
            config.pop(injected, None)
        router = cls(encoder=SentenceEncoder.from_pretrained(folder / ENCODER_FOLDER), **config)
        router.load_router_state(load_file(str(folder / WEIGHTS_NAME)))
        return router.eval()
