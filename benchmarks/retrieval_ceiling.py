"""Benchmark: how close parameter-free task retrieval comes to its ceiling, on frozen ImageNet features.

Setting: EfficientNet-Lite0 with its ImageNet weights (`hf_know.backbones.efficientnet_lite0`), frozen, pooled
features of class-incremental splits of Fashion-MNIST and sklearn's digits (5 tasks of 2 classes, the class order
drawn per seed), L2-normalised as `ClusterRetrievalAdapterConfig(feature_normalize=True)` does. Per seed, every
signature type of `fit_signature` is fitted on each task's training features alone (no other task's data) and
scored with `retrieve`; the ceiling is a supervised task classifier (logistic regression trained on all tasks'
features at once, its regularisation chosen by 3-fold cross-validation on the training features), the best any
retrieval in this feature space could be expected to do.

A second table asks whether another frozen feature space, or more data, lifts that ceiling on Fashion-MNIST (the
stream where task-free PROTEUS stays below its oracle): `class_gaussian` retrieval and the same ceiling on the pooled
output of single blocks, of three blocks concatenated, and of the head, at 300 and 2,000 training images per class
(`--scan-sizes`).

    python benchmarks/retrieval_ceiling.py        # writes benchmarks/results/retrieval_ceiling.{json,md}
    python benchmarks/retrieval_ceiling.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import fit_task_classifier, frozen_features, machine, percent, summarize, versions, write_results
from continual import class_order
from tqdm.auto import tqdm

from hf_know.backbones import efficientnet_lite0
from hf_know.cluster_retrieval import SIGNATURE_TYPES, fit_signature, retrieve
from hf_know.image_data import load_digits_dataset, load_fashion_mnist

RESULTS = Path(__file__).parent / "results"
DATASETS = {
    "fashion_mnist": lambda size, seed: load_fashion_mnist(
        image_size=size, train_per_class=300, test_per_class=200, seed=seed
    ),
    "digits": lambda size, seed: load_digits_dataset(image_size=size, seed=seed),
}
# Frozen feature spaces of the scan: blocks (mean-pooled over space) whose outputs are concatenated, or the head.
SCAN_SOURCES = {"block 10": (10,), "block 14": (14,), "blocks 10+12+14": (10, 12, 14), "head": ()}


def task_of_class(seed: int) -> torch.Tensor:
    """The task (0..4) of each of the 10 classes, in the class order drawn with `seed`."""
    order = class_order(seed)
    task_of = torch.empty(10, dtype=torch.long)
    for task in range(5):
        task_of[order[2 * task : 2 * task + 2]] = task
    return task_of


def ceiling(x_train: torch.Tensor, t_train: torch.Tensor, x_test: torch.Tensor, t_test: torch.Tensor) -> float:
    """Test accuracy of the supervised task classifier (C by 3-fold cross-validation on the training features)."""
    return float(fit_task_classifier(x_train.numpy(), t_train.numpy()).score(x_test.numpy(), t_test))


def one_seed(dataset: str, seed: int, size: int, device: str) -> dict:
    data = DATASETS[dataset](size, seed)
    model = efficientnet_lite0(10, image_size=size).to(device).eval()
    (x_train, y_train, _), (x_test, y_test, _) = (frozen_features(model, data[s], device) for s in ("train", "test"))
    x_train, x_test = (torch.nn.functional.normalize(x.double(), dim=-1) for x in (x_train, x_test))
    task_of = task_of_class(seed)
    t_train, t_test = task_of[y_train], task_of[y_test]
    scores = {"supervised_task_classifier": ceiling(x_train, t_train, x_test, t_test)}
    for kind in SIGNATURE_TYPES:
        signatures = [
            fit_signature(
                x_train[t_train == t],
                kind,
                max_components=2 if kind == "class_gaussian" else 10,
                labels=y_train[t_train == t],
            )
            for t in range(5)
        ]
        found, _ = retrieve(x_test, signatures)
        scores[kind] = float((found == t_test).double().mean())
    return scores


def scan_features(model, dataset, device: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({feature space of `SCAN_SOURCES`: L2-normalised features [N, D]}, labels [N]) from one frozen pass."""
    pooled = {}
    hooks = [
        model.backbone._blocks[b].register_forward_hook(
            lambda _, __, out, b=b: pooled.setdefault(b, []).append(out.mean((2, 3)).float().cpu())
        )
        for b in sorted({b for source in SCAN_SOURCES.values() for b in source})
    ]
    try:
        head, labels, _ = frozen_features(model, dataset, device)
    finally:
        for hook in hooks:
            hook.remove()
    spaces = {
        name: torch.cat([torch.cat(pooled[b]) for b in source], 1) if source else head
        for name, source in SCAN_SOURCES.items()
    }
    return {name: torch.nn.functional.normalize(x.double(), dim=-1) for name, x in spaces.items()}, labels


def scan_seed(seed: int, train_per_class: int, size: int, device: str) -> dict:
    """Split Fashion-MNIST: `class_gaussian` retrieval and the ceiling in each frozen feature space of
    `SCAN_SOURCES`, with `train_per_class` training images per class."""
    data = load_fashion_mnist(image_size=size, train_per_class=train_per_class, test_per_class=200, seed=seed)
    model = efficientnet_lite0(10, image_size=size).to(device).eval()
    (train, y_train), (test, y_test) = (scan_features(model, data[s], device) for s in ("train", "test"))
    task_of = task_of_class(seed)
    t_train, t_test = task_of[y_train], task_of[y_test]
    scores = {}
    for name in SCAN_SOURCES:
        signatures = [
            fit_signature(train[name][t_train == t], "class_gaussian", max_components=2, labels=y_train[t_train == t])
            for t in range(5)
        ]
        found, _ = retrieve(test[name], signatures)
        scores[name] = {
            "class_gaussian": float((found == t_test).double().mean()),
            "supervised_task_classifier": ceiling(train[name], t_train, test[name], t_test),
        }
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scan-sizes", type=int, nargs="*", default=[300, 2000], help="training images per class")
    parser.add_argument("--output", type=Path, default=RESULTS / "retrieval_ceiling")
    args = parser.parse_args()
    started, load = time.time(), os.getloadavg()
    runs = {name: [] for name in DATASETS}
    for dataset, seed in tqdm([(d, s) for d in DATASETS for s in args.seeds], desc="retrieval ceiling"):
        runs[dataset].append(one_seed(dataset, seed, args.image_size, args.device))
    table = {d: {k: summarize([r[k] for r in rs]) for k in rs[0]} for d, rs in runs.items()}
    scan = {
        n: [scan_seed(seed, n, args.image_size, args.device) for seed in tqdm(args.seeds, desc=f"scan, {n} per class")]
        for n in args.scan_sizes
    }
    scan_table = {
        n: {src: {k: summarize([r[src][k] for r in rs]) for k in rs[0][src]} for src in SCAN_SOURCES}
        for n, rs in scan.items()
    }
    output = {
        "setting": {"seeds": args.seeds, "image_size": args.image_size, "tasks": "5 x 2 classes"},
        "machine": machine(args.device),
        "load_average": [round(x, 2) for x in load],
        "versions": versions(),
        "runs": runs,
        "table": table,
        "scan_runs": scan,
        "scan_table": scan_table,
        "wall_seconds": time.time() - started,
    }
    lines = [
        "# Task retrieval against its ceiling (frozen ImageNet EfficientNet-Lite0 features)",
        "",
        f"{args.image_size} px, 5 tasks x 2 classes (class order per seed), seeds {args.seeds}; Fashion-MNIST: 300 "
        "training and 200 test images per class; digits: sklearn's 70/30 split. Retrieval accuracy %, mean ± std. "
        f"Wall time {output['wall_seconds'] / 60:.1f} min, load average at start {output['load_average']}.",
        "",
        "| method | " + " | ".join(DATASETS) + " |",
        "|---|" + "---|" * len(DATASETS),
    ]
    for method in table["digits"]:
        lines.append(f"| {method} | " + " | ".join(percent(table[d][method]) for d in DATASETS) + " |")
    if scan_table:
        lines += [
            "",
            "## Does another frozen feature space, or more data, lift the ceiling? (Fashion-MNIST)",
            "",
            "`class_gaussian` retrieval / supervised ceiling (%), mean ± std over the seeds, per feature space (blocks "
            "mean-pooled, concatenated, L2-normalised) and training images per class; 200 test images per class.",
            "",
            "| features | " + " | ".join(f"{n} per class" for n in scan_table) + " |",
            "|---|" + "---|" * len(scan_table),
        ]
        for src in SCAN_SOURCES:
            cells = [" / ".join(percent(stats) for stats in t[src].values()) for t in scan_table.values()]
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
    write_results(args.output, output, lines)


if __name__ == "__main__":
    main()
