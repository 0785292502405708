"""Meta-training KNOWN: forgetting trajectories of many small networks, and the L1 objective (KNOW, arXiv
2508.05059, and the authors' released training script).

The paper's meta-data are about 50 GB of trajectories of small CNNs on CIFAR-10, MNIST and FashionMNIST; that
collection and its training script are not released. This module makes the same kind of data from what is offline
here, scikit-learn's bundled datasets (digits as images, breast cancer and wine as tables), with small MLPs and
CNNs: each run pre-trains on the full training set (session 0), then fine-tunes sequentially on nested shrinking
subsets with a random subset ratio r, learning rate and batch size per run, as the paper describes (its released
demo instead restarts every session from one random init).

Real trajectories join them: `MetaDataConfig.trajectories` names folders that `collect_trajectory` wrote (pretrained
backbones fine-tuned on real tasks, PEFT adapters), and a random sample of each run's predicted scalars is read from
its checkpoints.

Every parameter scalar of every run gives a trajectory of `num_sessions` values, stored smallest data first; with
`window` = 5 and 7 sessions, the windows `0..4 -> 5` and `1..5 -> 6` are the training pairs. KNOWN is trained to
predict the next larger-data value with the L1 loss, Adam at 1e-3 and the authors' L1 regularisers.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging

from .checkpoints import CheckpointReader, resolve_checkpoint
from .hypermodel import KINDS, KnowHyperModel, tensor_kind
from .trajectory import TRAJECTORY_FILE, trajectory_checkpoints

logger = logging.get_logger(__name__)

META_TASKS = ("digits_cnn", "digits_mlp", "breast_cancer_mlp", "wine_mlp")


@dataclass
class MetaDataConfig:
    """How the meta-data trajectories are made (one run = one network, one dataset, one random r / lr / batch).

    The defaults are the shipped hyper-model's recipe. The learning rate is drawn log-uniformly from 1e-4 to 4e-3. The
    paper's range starts at 1e-5; we tried that: KNOWN's held-out error relative to the naive prediction stayed the
    same (0.49 against 0.51 of naive on FC weights), but the step it predicts for a flat trajectory (a constant added
    to every weight) grew up to threefold, so the recipe keeps 1e-4. r starts at 0.45 rather than the paper's 0.3,
    which would leave a handful of examples in the last session of these small datasets.
    """

    num_runs: int = field(default=96, metadata={"help": "Networks trained; tasks are cycled over META_TASKS."})
    tasks: list[str] = field(default_factory=lambda: list(META_TASKS), metadata={"help": f"Among {META_TASKS}."})
    num_sessions: int = field(default=7, metadata={"help": "Checkpoints per run (session 0 = full data)."})
    pretrain_epochs: int = field(default=20, metadata={"help": "Epochs of session 0 on the full training set."})
    session_epochs: int = field(default=3, metadata={"help": "Epochs of every later, shrinking session."})
    r_range: list[float] = field(default_factory=lambda: [0.45, 0.9], metadata={"help": "Ratio r ~ U(low, high)."})
    lr_range: list[float] = field(default_factory=lambda: [1e-4, 4e-3], metadata={"help": "Adam LR, log-uniform."})
    batch_size_range: list[int] = field(default_factory=lambda: [16, 128], metadata={"help": "Batch ~ U(low, high)."})
    meta_data_seed: int = field(default=0, metadata={"help": "Seed of the run settings, inits and subsets."})
    trajectories: list[str] = field(
        default_factory=list,
        metadata={"help": "collect_trajectory output folders of real runs, each with num_sessions sessions."},
    )
    max_scalars_per_trajectory: int = field(
        default=200_000, metadata={"help": "Scalars drawn at random from each real trajectory, per kind."}
    )

    def __post_init__(self):
        unknown = sorted(set(self.tasks) - set(META_TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"MetaDataConfig.tasks={self.tasks}: expected a non-empty list among {META_TASKS}.")
        if self.num_runs < 0 or self.num_sessions < 2 or self.pretrain_epochs < 1 or self.session_epochs < 1:
            raise ValueError(
                f"MetaDataConfig needs num_runs >= 0, num_sessions >= 2 and epochs >= 1; got num_runs={self.num_runs}, "
                f"num_sessions={self.num_sessions}, pretrain_epochs={self.pretrain_epochs}, "
                f"session_epochs={self.session_epochs}."
            )
        ranges = {
            "r_range": (0 < self.r_range[0] <= self.r_range[1] < 1, "0 < low <= high < 1"),
            "lr_range": (0 < self.lr_range[0] <= self.lr_range[1], "0 < low <= high"),
            "batch_size_range": (1 <= self.batch_size_range[0] <= self.batch_size_range[1], "1 <= low <= high"),
        }
        for name, (valid, expected) in ranges.items():
            if not valid:
                raise ValueError(f"MetaDataConfig.{name}={getattr(self, name)}: expected {expected}.")
        if self.max_scalars_per_trajectory < 1:
            raise ValueError(
                f"MetaDataConfig.max_scalars_per_trajectory={self.max_scalars_per_trajectory}: expected >= 1."
            )
        if self.num_runs == 0 and not self.trajectories:
            raise ValueError("MetaDataConfig has num_runs=0 and no trajectories: the meta-data would be empty.")


def _task_data(task: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    loader = {"digits": load_digits, "breast": load_breast_cancer, "wine": load_wine}[task.split("_")[0]]
    x, y = loader(return_X_y=True)
    x_train, _, y_train, _ = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    x_train = StandardScaler().fit_transform(x_train) if not task.startswith("digits") else x_train / 16.0
    x_train = torch.tensor(x_train, dtype=torch.float32)
    if task == "digits_cnn":
        x_train = x_train.reshape(-1, 1, 8, 8)
    return x_train, torch.tensor(y_train), int(y.max()) + 1


def _network(task: str, in_features: int, num_classes: int, generator: torch.Generator) -> nn.Module:
    width = int(torch.randint(16, 65, (1,), generator=generator))
    if task == "digits_cnn":
        channels = int(torch.randint(4, 17, (1,), generator=generator))
        return nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * channels * 16, width),
            nn.ReLU(),
            nn.Linear(width, num_classes),
        )
    return nn.Sequential(
        nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_classes)
    )


def _train(model, optimizer, x, y, epochs, batch_size, generator) -> None:
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def collect_meta_trajectories(config: MetaDataConfig, conv_rule: str = "any_kernel") -> dict[str, torch.Tensor]:
    """Per kind (`conv`, `fc`, `bias`), the trajectories `[N, num_sessions]` of every scalar of every run, smallest
    data first."""
    unknown = sorted(set(config.tasks) - set(META_TASKS))
    if unknown:
        raise ValueError(f"Unknown meta-data task(s) {unknown}; expected among {META_TASKS}.")
    generator = torch.Generator().manual_seed(config.meta_data_seed)
    rng = np.random.default_rng(config.meta_data_seed)
    collected: dict[str, list[torch.Tensor]] = {kind: [] for kind in KINDS}
    for run in tqdm(range(config.num_runs), desc="meta-data runs"):
        task = config.tasks[run % len(config.tasks)]
        x, y, num_classes = _task_data(task, seed=run)
        r = float(rng.uniform(*config.r_range))
        lr = float(math.exp(rng.uniform(math.log(config.lr_range[0]), math.log(config.lr_range[1]))))
        batch_size = int(rng.integers(config.batch_size_range[0], config.batch_size_range[1] + 1))
        model = _network(task, x.shape[-1], num_classes, generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        order = torch.randperm(len(x), generator=generator)
        sessions = []
        for session in range(config.num_sessions):
            size = max(1, round(r**session * len(x)))
            subset = order[:size]
            epochs = config.pretrain_epochs if session == 0 else config.session_epochs
            _train(model, optimizer, x[subset], y[subset], epochs, min(batch_size, size), generator)
            sessions.append({name: p.detach().clone() for name, p in model.named_parameters()})
        logger.info("meta run %d: %s, r=%.2f, lr=%.1e, batch %d", run, task, r, lr, batch_size)
        for name, value in sessions[0].items():
            trajectory = torch.stack([s[name].reshape(-1) for s in reversed(sessions)], dim=1)
            collected[tensor_kind(value.shape, conv_rule)].append(trajectory)
    for folder in tqdm(config.trajectories, desc="real trajectories"):
        sample = read_trajectory(folder, config.num_sessions, config.max_scalars_per_trajectory, generator, conv_rule)
        for kind, trajectories in sample.items():
            collected[kind].append(trajectories)
    return {
        kind: torch.cat(parts) if parts else torch.empty(0, config.num_sessions) for kind, parts in collected.items()
    }


def read_trajectory(
    folder: str | os.PathLike,
    num_sessions: int,
    max_scalars: int,
    generator: torch.Generator,
    conv_rule: str = "any_kernel",
) -> dict[str, torch.Tensor]:
    """Per kind, up to `max_scalars` trajectories `[N, num_sessions]` (smallest data first) drawn at random from the
    tensors `KnowPredictor.predict` would predict in a `collect_trajectory` output folder."""
    from .predictor import tensor_role  # the predictor imports this module's hyper-model, not the reverse

    manifest = Path(folder) / TRAJECTORY_FILE
    if not manifest.is_file():
        raise ValueError(f"{folder}: no {TRAJECTORY_FILE}; expected a folder collect_trajectory wrote.")
    sessions = json.loads(manifest.read_text())["num_sessions"]
    if sessions != num_sessions:
        raise ValueError(f"{folder} holds {sessions} sessions; the meta-data use num_sessions={num_sessions}.")
    checkpoints = trajectory_checkpoints(folder, num_sessions)
    readers = [CheckpointReader(resolve_checkpoint(c)) for c in checkpoints]
    try:
        full = readers[-1]
        shapes = {name: info.shape for name, info in full.tensors.items()}
        names = {kind: [] for kind in KINDS}
        for name, info in full.tensors.items():
            if tensor_role(name, info.shape, info.dtype, shapes, full.is_adapter) == "predict":
                names[tensor_kind(info.shape, conv_rule)].append(name)
        sampled = {}
        for kind, kind_names in names.items():
            sizes = [full.tensors[name].numel for name in kind_names]
            total = sum(sizes)
            if not total:
                continue
            picked = torch.randperm(total, generator=generator)[:max_scalars].sort().values
            offsets = torch.tensor([0, *itertools.accumulate(sizes)])
            parts = []
            for i, name in enumerate(kind_names):
                rows = picked[(picked >= offsets[i]) & (picked < offsets[i + 1])] - offsets[i]
                if len(rows):
                    values = [reader.read(name, 0, sizes[i])[rows].float() for reader in readers]
                    parts.append(torch.stack(values, dim=1))
            sampled[kind] = torch.cat(parts)
    finally:
        for reader in readers:
            reader.close()
    return sampled


def training_pairs(trajectories: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every `window`-long run of a trajectory (smallest data first) and the next, larger-data value after it."""
    inputs = [trajectories[:, i : i + window] for i in range(trajectories.shape[1] - window)]
    targets = [trajectories[:, i + window] for i in range(trajectories.shape[1] - window)]
    return torch.cat(inputs), torch.cat(targets)


@dataclass
class MetaTrainConfig:
    """How KNOWN is fitted to the meta-data (the authors': L1 loss, Adam 1e-3, L1 regularisers 1e-6 / 0.1)."""

    epochs: int = field(default=40, metadata={"help": "Passes over the training pairs."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    batch_size: int = field(default=4096, metadata={"help": "Scalars per step."})
    kernel_l1: float = field(default=1e-6, metadata={"help": "L1 on the regularised layers' kernels."})
    bias_l1: float = field(default=0.1, metadata={"help": "L1 on the regularised layers' biases."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Held-out share of the pairs."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and the batch order."})

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(
                f"MetaTrainConfig needs epochs >= 1, batch_size >= 1 and learning_rate > 0; got {self.epochs}, "
                f"{self.batch_size} and {self.learning_rate}."
            )
        if self.kernel_l1 < 0 or self.bias_l1 < 0 or not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"MetaTrainConfig needs kernel_l1, bias_l1 >= 0 and 0 < validation_fraction < 1; got "
                f"{self.kernel_l1}, {self.bias_l1} and {self.validation_fraction}."
            )


def meta_train(
    hypermodel: KnowHyperModel, trajectories: dict[str, torch.Tensor], config: MetaTrainConfig
) -> dict[str, dict[str, float]]:
    """Train each KNOWN network on its kind's trajectories; returns held-out L1 errors of KNOWN against the naive
    prediction (the newest value) and a 2-point task vector, per kind."""
    generator = torch.Generator().manual_seed(config.seed)
    report = {}
    for kind in KINDS:
        if trajectories.get(kind) is None or len(trajectories[kind]) == 0:
            raise ValueError(f"The meta-data hold no {kind!r} trajectories; KNOWN needs all of {KINDS}.")
        inputs, targets = training_pairs(trajectories[kind].float(), hypermodel.window)
        order = torch.randperm(len(inputs), generator=generator)
        num_val = max(1, int(config.validation_fraction * len(order)))
        val, train = order[:num_val], order[num_val:]
        net = hypermodel.nets[kind]
        optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        kernels, biases = net.regularised_parameters()
        for _ in tqdm(range(config.epochs), desc=f"meta-train KNOWN_{kind}"):
            for batch in train[torch.randperm(len(train), generator=generator)].split(config.batch_size):
                x = inputs[batch]
                loss = (x[:, -1] + net(x) - targets[batch]).abs().mean()
                loss = loss + config.kernel_l1 * sum(k.abs().sum() for k in kernels)
                loss = loss + config.bias_l1 * sum(b.abs().sum() for b in biases)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            x, y = inputs[val], targets[val]
            report[kind] = {
                "train_pairs": len(train),
                "val_pairs": len(val),
                "val_l1_known": float((x[:, -1] + net(x) - y).abs().mean()),
                "val_l1_naive": float((x[:, -1] - y).abs().mean()),
                "val_l1_task_vector": float((2 * x[:, -1] - x[:, -2] - y).abs().mean()),
            }
        logger.info("KNOWN_%s: %s", kind, report[kind])
    return report


def config_dict(*configs) -> dict:
    """The configs as one JSON-able record."""
    return {type(c).__name__: asdict(c) for c in configs}
