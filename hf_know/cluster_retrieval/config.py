"""Configuration of PROTEUS continual fine-tuning (Le, Bui, Hoang and Hoang, arXiv 2603.13235)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft import PeftConfig

from .._peft_registry import add_peft_type
from .signatures import COVARIANCE_TYPES, RETRIEVAL_RULES, SIGNATURE_TYPES

COMPOSITIONS = ("learned", "sum", "none")
ORTHO_MODES = ("penalty", "projection")
POOLINGS = ("cls", "mean", "last_token")
RETRIEVAL_SPACES = ("task_adapted", "frozen_backbone")
HEADS = ("none", "lda")


@dataclass
class ClusterRetrievalAdapterConfig(PeftConfig):
    """Configuration of a [`ClusterRetrievalModel`]: one low-rank module per task, task signatures, retrieval.

    A stream of tasks is learnt one task at a time (`model.add_task(name)`, train, `model.fit_signature(name,
    loader)`). Task t's update of a targeted weight is composed from its own low-rank pair and the frozen pairs of
    the earlier tasks (PROTEUS, arXiv 2603.13235, adaptive module composition):

        ΔW_t = s · (B_t A_t + Σ_{j<t} c_{t,j} B_j A_j),   s = lora_alpha / r

    with c_{t,j} learned (initialised at 0, L1/L2-penalised) and A_t kept orthogonal to the earlier A_j (a penalty
    on their row cosines, or a hard projection). After training, the embeddings of the task's inputs are summarised
    by a Gaussian-mixture *signature*; at inference each input goes to the task under whose signature its
    embedding is most likely, with no task id and no learned router.

    All tasks of a stream live in one PEFT adapter (one named module per task inside it), so that
    `save_pretrained`, `PeftModel.from_pretrained` and `push_to_hub` keep every task and signature; `task_names`
    and `feature_dim` record what to rebuild on load and are filled in by the model, not by hand.

    Args:
        r (`int`): Rank of each task's low-rank pair.
        lora_alpha (`float`): Scaling numerator: updates are multiplied by `lora_alpha / r`. It scales this method's
            own per-task low-rank pairs; the name is LoRA's, whose scaling rule it keeps, so LoRA users' recipes
            carry over.
        lora_dropout (`float`): Dropout on the input of this method's low-rank path (named as in LoRA, likewise).
        target_modules (`Optional[Union[list[str], str]]`): `nn.Linear` modules to adapt (names, suffixes or a
            regex, as in LoRA). `None` uses LoRA's per-architecture defaults (e.g. query/value for BERT and ViT).
        exclude_modules (`Optional[Union[list[str], str]]`): Modules never to adapt.
        modules_to_save (`Optional[list[str]]`): Modules trained in full and saved. Shared by all tasks, so they
            are overwritten by each task: for a task-free stream, target the head instead (one low-rank update of
            it per task, routed with the rest).
        composition (`str`): `"learned"` (the paper's: learned c_{t,j}), `"sum"` (every earlier update added
            with weight 1, as O-LoRA) or `"none"` (each task uses only its own pair).
        composition_l1 (`float`), composition_l2 (`float`): L1 / L2 penalties on the training task's
            coefficients, averaged over layers.
        ortho_lambda (`float`): Weight of the orthogonality penalty: the mean squared cosine between the rows of
            the new A_t and of every earlier A_j, averaged over layers (scale-free, so it cannot be met by
            shrinking A_t, a known O-LoRA failure).
        ortho_mode (`str`): `"penalty"` or `"projection"`: A_t is used as A_t (I - Q Qᵀ), Q an orthonormal basis
            of the earlier A rows, so the new rows are exactly orthogonal (InfLoRA-like); baked in when the next
            task is added.
        feature_layer (`int`): Which hidden state is pooled into a task embedding, in transformers' convention:
            0 is the embedding output, i the output of block i, -1 the last block. Lower layers are cheaper:
            an embedding pass stops there (when the blocks are alike, as transformer layers are), and where every
            adapted layer runs above it, retrieval reads it inside the prediction's own forward (single pass).
        pooling (`str`): `"cls"` (first token), `"mean"` (over unmasked tokens, or spatial positions for conv
            features) or `"last_token"` (last unmasked token, for decoders).
        feature_normalize (`bool`): L2-normalise embeddings before fitting and scoring.
        signature_type (`str`): `"dpgmm"` (the paper's Dirichlet-process mixture), `"gmm"`, `"kmeans"`,
            `"centroid"` or `"class_gaussian"` (one shrunk full-covariance Gaussian per class of the task: needs
            labels in `fit_signature`'s batches), see [`fit_signature`].
        max_components (`int`): DP truncation / number of components (for `class_gaussian`: the most classes a
            task has). Signatures are stored padded to this size.
        covariance_type (`str`): `"diag"`, `"spherical"` or `"full"` (for dpgmm / gmm).
        reg_covar (`float`): Added to every variance.
        retrieval_rule (`str`): `"max_loglik"` (the paper's), `"nearest_centroid"` or `"soft"` (softmax over the
            `top_k` best log-likelihoods / `retrieval_temperature`; the sample's update is the weighted mix).
        retrieval_temperature (`float`), top_k (`int`): for `"soft"`.
        retrieval_space (`str`): `"task_adapted"` (the paper's: the input is embedded through each task's own
            module and scored against that task's signature; m tasks cost one forward of an m-times batch up to
            `feature_layer`) or `"frozen_backbone"` (one pass with the adapters off, scored against every
            signature; a deviation from the paper, much cheaper at many tasks).
        head (`str`): `"none"` or `"lda"`: also fit a rehearsal-free LDA head per task (class means and a shrunk
            pooled within-class covariance of the task's embeddings) in `fit_signature`, used by `classify`.
        lda_shrinkage (`float`): Shrinkage of the LDA covariance towards a multiple of the identity, in [0, 1].
        task_names (`list[str]`): The tasks added so far, in order. Filled in by `add_task`.
        task_classes (`dict[str, list[int]]`): The label ids of each task, for the LDA head. Filled in by
            `fit_signature`.
        feature_dim (`Optional[int]`): Size of the embeddings the signatures were fitted on. Filled in by
            `fit_signature`.
    """

    r: int = field(default=8, metadata={"help": "Rank of each task's low-rank pair."})
    lora_alpha: float = field(default=16, metadata={"help": "Updates are scaled by lora_alpha / r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the input of the low-rank path."})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "nn.Linear modules to adapt (names, suffixes or regex); None uses LoRA's defaults."},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names (list) or regex of modules never to adapt."}
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full and saved; shared (overwritten) across tasks."}
    )
    composition: Literal["learned", "sum", "none"] = field(
        default="learned",
        metadata={"help": "Earlier tasks' updates in a new task's: 'learned' coefficients, 'sum' or 'none'."},
    )
    composition_l1: float = field(default=1e-4, metadata={"help": "L1 penalty on the composition coefficients."})
    composition_l2: float = field(default=0.0, metadata={"help": "L2 penalty on the composition coefficients."})
    ortho_lambda: float = field(
        default=0.1, metadata={"help": "Weight of the mean squared row cosine between new and earlier A."}
    )
    ortho_mode: Literal["penalty", "projection"] = field(
        default="penalty", metadata={"help": "'penalty', or 'projection' onto the earlier A rows' complement."}
    )
    feature_layer: int = field(
        default=-1, metadata={"help": "Hidden state pooled into the task embedding (0 = embeddings, -1 = last)."}
    )
    pooling: Literal["cls", "mean", "last_token"] = field(
        default="cls", metadata={"help": "Pooling of the hidden state: 'cls', 'mean' or 'last_token'."}
    )
    feature_normalize: bool = field(default=True, metadata={"help": "L2-normalise the embeddings."})
    signature_type: Literal["dpgmm", "gmm", "kmeans", "centroid", "class_gaussian"] = field(
        default="dpgmm",
        metadata={"help": "Task signature: 'dpgmm' (paper), 'gmm', 'kmeans', 'centroid' or 'class_gaussian'."},
    )
    max_components: int = field(default=10, metadata={"help": "Components per signature (DP truncation)."})
    covariance_type: Literal["diag", "spherical", "full"] = field(
        default="diag", metadata={"help": "Covariance of each component: 'diag', 'spherical' or 'full'."}
    )
    reg_covar: float = field(default=1e-4, metadata={"help": "Added to every variance of a signature."})
    retrieval_rule: Literal["max_loglik", "nearest_centroid", "soft"] = field(
        default="max_loglik", metadata={"help": "'max_loglik' (paper), 'nearest_centroid' or 'soft' (top-k mix)."}
    )
    retrieval_temperature: float = field(default=1.0, metadata={"help": "Temperature of 'soft' retrieval."})
    top_k: int = field(default=1, metadata={"help": "Tasks mixed by 'soft' retrieval."})
    retrieval_space: Literal["task_adapted", "frozen_backbone"] = field(
        default="task_adapted",
        metadata={"help": "Embed through each task's module ('task_adapted', paper) or the frozen backbone."},
    )
    head: Literal["none", "lda"] = field(
        default="none", metadata={"help": "'lda': a rehearsal-free LDA head from class statistics (see classify)."}
    )
    lda_shrinkage: float = field(default=0.1, metadata={"help": "LDA covariance shrinkage towards the identity."})
    task_names: list[str] = field(
        default_factory=list, metadata={"help": "Tasks added so far, in order (filled in by add_task)."}
    )
    task_classes: dict[str, list[int]] = field(
        default_factory=dict, metadata={"help": "Label ids of each task (filled in by fit_signature, head='lda')."}
    )
    feature_dim: int | None = field(
        default=None, metadata={"help": "Embedding size of the signatures (filled in by fit_signature)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_peft_type("CLUSTER_RETRIEVAL")
        choices = {
            "composition": COMPOSITIONS,
            "ortho_mode": ORTHO_MODES,
            "pooling": POOLINGS,
            "signature_type": SIGNATURE_TYPES,
            "covariance_type": COVARIANCE_TYPES,
            "retrieval_rule": RETRIEVAL_RULES,
            "retrieval_space": RETRIEVAL_SPACES,
            "head": HEADS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ClusterRetrievalAdapterConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}."
                )
        positive = {"r": self.r, "max_components": self.max_components, "top_k": self.top_k}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ClusterRetrievalAdapterConfig.{name} must be a positive int, got {value!r}.")
        non_negative = ("composition_l1", "composition_l2", "ortho_lambda", "lora_dropout")
        for name in non_negative:
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(
                    f"ClusterRetrievalAdapterConfig.{name} must be a number >= 0, got {getattr(self, name)!r}."
                )
        if not 0.0 <= self.lda_shrinkage <= 1.0:
            raise ValueError(
                f"ClusterRetrievalAdapterConfig.lda_shrinkage must lie in [0, 1], got {self.lda_shrinkage!r}."
            )
        if self.reg_covar <= 0 or self.retrieval_temperature <= 0:
            raise ValueError(
                f"ClusterRetrievalAdapterConfig.reg_covar and retrieval_temperature must be > 0, got "
                f"{self.reg_covar!r} and {self.retrieval_temperature!r}."
            )
        if self.modules_to_save is not None and isinstance(self.modules_to_save, str):
            raise TypeError(
                f"ClusterRetrievalAdapterConfig.modules_to_save must be a list of module names, got the string "
                f"{self.modules_to_save!r}; write [{self.modules_to_save!r}]."
            )
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = set(self.target_modules)
        self.task_names = list(self.task_names)
        self.task_classes = {task: [int(c) for c in classes] for task, classes in self.task_classes.items()}
