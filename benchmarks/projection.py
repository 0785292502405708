"""Benchmark: model projection against the usual fine-tuning methods, in a transfer setting built offline.

Setting: a transformers ResNet with 3x3 convs (basic blocks) is pre-trained on sklearn's digits 0-4 (source task)
and transferred to digits 5-9 with 5 training images per class (target task); the held-out 30% of each target
class is the test set. The same recipe (AdamW, same epochs and batch size, a constant learning rate chosen per
method from one grid on a disjoint validation split) is used for every method, with 3 seeds. `projection_bn` is
projection with `train_batchnorm=True` (an ablation). Also measured in the same run: training from scratch on the
target, training step time as a ratio to full fine-tuning, training memory, and the forward time of the unmerged
and merged projection model as a ratio to the base model.

    python benchmarks/projection.py            # writes benchmarks/results/projection.{json,md,png}
    python benchmarks/projection.py --device cuda

One file, like every benchmark here: setting, arms, scoring and report together, so that it runs standalone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from common import machine, summarize, training_arguments, versions
from transformers import ResNetConfig, ResNetForImageClassification, Trainer

from hf_know.image_data import load_digits_dataset
from hf_know.projection.recipes import apply_method, conv_module_names, prepare_full_finetuning

RESULTS = Path(__file__).parent / "results"
SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
# Every method gets its learning rate chosen from this grid on a validation split (seed 0); the rest is shared.
LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
METHODS = ("scratch_full", "linear_probe", "bias_only", "ia3", "lora", "projection", "projection_bn", "full")
# The two-stage recipe: stage 1 is projection at projection's chosen learning rate; the learning rate of stage 2
# (full fine-tuning of the merged model) is chosen on the validation split, like every other free setting.
TWO_STAGE = "projection_then_full"
# Benchmark rows that are a method of `apply_method` with non-default options (ablations).
ABLATIONS = {"projection_bn": ("projection", {"train_batchnorm": True})}


def prepare(model, name: str):
    method, options = ABLATIONS.get(name, (name, {}))
    return apply_method(model, method, **options)


def resnet(num_labels: int) -> ResNetForImageClassification:
    config = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        num_labels=num_labels,
    )
    return ResNetForImageClassification(config)


def fit(model, data, lr: float, epochs: float, seed: int, device: str) -> float:
    """Train with `transformers.Trainer`; return test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(
            tmp,
            device,
            num_train_epochs=epochs,
            learning_rate=lr,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=256,
            seed=seed,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"])
        trainer.train()
        logits = trainer.predict(data["test"]).predictions
    return float((logits.argmax(-1) == np.asarray(data["test"]["labels"])).mean())


def pretrain(source, epochs: float, device: str) -> tuple[Path, float]:
    transformers.set_seed(0)
    model = resnet(len(SOURCE))
    accuracy = fit(model, source, lr=3e-3, epochs=epochs, seed=0, device=device)
    path = Path(tempfile.mkdtemp(prefix="projection-bench-")) / "pretrained"
    model.save_pretrained(path)
    return path, accuracy


def load_pretrained(path: Path) -> ResNetForImageClassification:
    return ResNetForImageClassification.from_pretrained(path, num_labels=len(TARGET), ignore_mismatched_sizes=True)


def run_method(method: str, lr: float, pretrained: Path, data, seed: int, epochs: float, device: str, stage2_lr=None):
    """Train `method` on data["train"] at learning rate `lr`; return accuracy on data["test"] and the size."""
    transformers.set_seed(seed)
    model = resnet(len(TARGET)) if method == "scratch_full" else prepare(load_pretrained(pretrained), method)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accuracy = fit(model, data, lr, epochs, seed, device)
    if method == "projection_then_full":
        accuracy = fit(prepare_full_finetuning(model), data, stage2_lr, epochs, seed, device)
    return {"accuracy": accuracy, "trainable_parameters": trainable}


def conv_parameter_counts(pretrained: Path) -> dict:
    """Trainable conv parameters: full fine-tuning vs projection (all convs, and without 1x1 convs)."""
    model = load_pretrained(pretrained)
    full = sum(dict(model.named_modules())[n].weight.numel() for n in conv_module_names(model))
    counts = {"full_finetuning": full}
    for skip in (False, True):
        projected = apply_method(load_pretrained(pretrained), "projection", skip_pointwise=skip)
        gammas = sum(p.numel() for n, p in projected.named_parameters() if "projection_gamma" in n)
        counts["projection_skip_pointwise" if skip else "projection"] = gammas
    return counts


def step_cost(method: str, pretrained: Path, device: str, batch_size: int = 64, steps: int = 30) -> dict:
    """Median time of one AdamW training step, and the training memory it holds.

    Memory = parameters + gradients + optimizer state + the activations autograd saves for backward, summed from
    the actual tensors of one step (on CUDA: the allocator's peak instead).
    """
    torch.manual_seed(0)
    model = prepare(load_pretrained(pretrained), method).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randn(batch_size, 1, 32, 32, device=device)
    y = torch.randint(0, len(TARGET), (batch_size,), device=device)
    saved = []

    def record_size(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    def step(record: bool = False):
        pack = record_size if record else (lambda t: t)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    for _ in range(5):
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
        state = sum(
            t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
        )
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        grads = sum(p.numel() * p.element_size() for p in params)
        memory = weights + grads + state + sum(saved)
    return {"step_seconds": statistics.median(times), "memory_mb": memory / 2**20}


def forward_ratios(pretrained: Path, device: str, batch_size: int = 64, repeats: int = 60) -> dict:
    """Forward time of the unmerged and the merged projection model relative to the base model, interleaved."""
    torch.manual_seed(0)
    base = load_pretrained(pretrained).to(device).eval()
    projected = apply_method(load_pretrained(pretrained), "projection").to(device).eval()
    with torch.no_grad():
        for p in projected.parameters():
            if p.requires_grad:
                p.mul_(1 + 0.01 * torch.randn_like(p))  # a trained-looking adapter, not the identity
    merged = apply_method(load_pretrained(pretrained), "projection")
    merged.load_state_dict(projected.state_dict())
    merged = merged.merge_and_unload().to(device).eval()
    x = torch.randn(batch_size, 1, 32, 32, device=device)
    models = {"base": base, "unmerged": projected, "merged": merged}
    times = {name: [] for name in models}
    with torch.no_grad():
        max_diff = (projected(pixel_values=x).logits - merged(pixel_values=x).logits).abs().max().item()
        for _ in range(5):
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
    # Noise floor: two halves of the base model's own timings against each other.
    half = len(times["base"]) // 2
    noise = abs(statistics.median(times["base"][:half]) / statistics.median(times["base"][half:]) - 1)
    return {
        "base_ms": 1e3 * base_time,
        "unmerged_ratio": statistics.median(times["unmerged"]) / base_time,
        "merged_ratio": statistics.median(times["merged"]) / base_time,
        "base_self_noise": noise,
        "merge_max_abs_logit_diff": max_diff,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=60)
    parser.add_argument("--pretrain-epochs", type=float, default=20)
    parser.add_argument("--train-per-class", type=int, default=5)
    parser.add_argument("--validation-per-class", type=int, default=50)
    parser.add_argument("--output", type=Path, default=RESULTS / "projection")
    args = parser.parse_args()
    started = time.time()

    source = load_digits_dataset(SOURCE)
    target = load_digits_dataset(
        TARGET, train_per_class=args.train_per_class, validation_per_class=args.validation_per_class
    )
    validation = {"train": target["train"], "test": target["validation"]}
    pretrained, source_accuracy = pretrain(source, args.pretrain_epochs, args.device)
    print(f"pre-trained on digits {SOURCE}: source test accuracy {source_accuracy:.4f}", flush=True)

    chosen, validation_accuracy = {}, {}
    for method in METHODS:
        validation_accuracy[method] = {
            lr: run_method(method, lr, pretrained, validation, 0, args.epochs, args.device)["accuracy"]
            for lr in LR_GRID
        }
        chosen[method] = max(LR_GRID, key=lambda lr: (validation_accuracy[method][lr], -lr))  # ties: smaller LR
        print(f"{method}: validation {validation_accuracy[method]} -> lr {chosen[method]}", flush=True)

    chosen[TWO_STAGE] = chosen["projection"]
    validation_accuracy["projection_then_full (stage 2)"] = {
        lr: run_method(TWO_STAGE, chosen["projection"], pretrained, validation, 0, args.epochs, args.device, lr)[
            "accuracy"
        ]
        for lr in LR_GRID
    }
    stage2_lr = max(LR_GRID, key=lambda lr: (validation_accuracy["projection_then_full (stage 2)"][lr], -lr))
    print(f"{TWO_STAGE} stage 2: validation {validation_accuracy['projection_then_full (stage 2)']}", flush=True)
    runs: dict[str, list[dict]] = {method: [] for method in (*METHODS, TWO_STAGE)}
    for seed in args.seeds:
        for method in runs:
            result = run_method(method, chosen[method], pretrained, target, seed, args.epochs, args.device, stage2_lr)
            runs[method].append(result)
            print(f"seed {seed} {method}: {result}", flush=True)

    accuracy = {m: summarize([r["accuracy"] for r in rs]) for m, rs in runs.items()}
    trainable = {m: rs[0]["trainable_parameters"] for m, rs in runs.items()}
    # The two-stage recipe's steps are projection's and full fine-tuning's, both measured already.
    cost = {m: step_cost(m, pretrained, args.device) for m in METHODS if m != "scratch_full"}
    full_step = cost["full"]["step_seconds"]
    for m in cost:
        cost[m]["step_ratio_to_full"] = cost[m]["step_seconds"] / full_step
    forward = forward_ratios(pretrained, args.device)
    conv_counts = conv_parameter_counts(pretrained)

    acc = {m: a["mean"] for m, a in accuracy.items()}
    goals = {
        "projection >= lora r=8": acc["projection"] >= acc["lora"],
        "projection >= linear probe": acc["projection"] >= acc["linear_probe"],
        "projection within 1.5 points of full FT": acc["projection"] >= acc["full"] - 0.015,
        "projection conv params <= 15% of full FT conv params": conv_counts["projection"]
        <= 0.15 * conv_counts["full_finetuning"],
        "projection then full FT >= full FT": acc["projection_then_full"] >= acc["full"],
        "pre-trained full FT > scratch": acc["full"] > acc["scratch_full"],
        "unmerged forward <= 1.25x base": forward["unmerged_ratio"] <= 1.25,
        "merged forward == base within noise (|ratio-1| <= max(5%, 2x self-noise))": abs(forward["merged_ratio"] - 1)
        <= max(0.05, 2 * forward["base_self_noise"]),
    }
    result = {
        "setting": {
            "model": "transformers ResNet, basic blocks, embedding 16, hidden [16, 32, 64], depths [1, 1, 1]",
            "source_task": f"sklearn digits {SOURCE}, all training images, {args.pretrain_epochs} epochs",
            "source_test_accuracy": source_accuracy,
            "target_task": f"sklearn digits {TARGET}, {args.train_per_class} training images per class, 30% held out",
            "train_per_class": args.train_per_class,
            "image_size": 32,
            "epochs": args.epochs,
            "batch_size": 16,
            "optimizer": "AdamW, constant LR, no weight decay",
            "validation_task": f"{args.validation_per_class} further training-pool images per class, disjoint from "
            "train and test",
            "learning_rate_grid": LR_GRID,
            "learning_rates": chosen,
            "validation_accuracy": {m: {str(lr): a for lr, a in v.items()} for m, v in validation_accuracy.items()},
            "stage2_learning_rate": stage2_lr,
            "seeds": args.seeds,
        },
        "machine": machine(args.device),
        "versions": versions(),
        "accuracy": accuracy,
        "runs": runs,
        "trainable_parameters": trainable,
        "conv_parameters": conv_counts,
        "step_cost": cost,
        "forward": forward,
        "goals": goals,
        "wall_seconds": time.time() - started,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.output.with_suffix(".md").write_text(render_markdown(result))
    plot(result, args.output.with_suffix(".png"))
    print(args.output.with_suffix(".md").read_text())


def render_markdown(result: dict) -> str:
    s, lines = result["setting"], []
    lines += [
        "# Model projection benchmark",
        "",
        f"Source: {s['source_task']} (test accuracy {s['source_test_accuracy']:.4f}). Target: {s['target_task']}.",
        f"Model: {s['model']}. {s['optimizer']}, {s['epochs']} epochs, batch {s['batch_size']}, seeds {s['seeds']}.",
        f"Learning rate: chosen per method from {list(s['learning_rate_grid'])} by validation accuracy (seed 0) on "
        f"{s['validation_task']}; projection_then_full uses projection's LR for stage 1 and a stage-2 LR chosen "
        f"the same way ({s['stage2_learning_rate']}).",
        f"Machine: {result['machine']}. Versions: {result['versions']}.",
        "",
        "| method | test accuracy (mean ± std) | trainable params | step time / full FT | training memory (MB) | LR |",
        "|---|---|---|---|---|---|",
    ]
    for method, a in result["accuracy"].items():
        cost = result["step_cost"].get(method)
        step = f"{cost['step_ratio_to_full']:.2f}" if cost else "-"
        memory = f"{cost['memory_mb']:.1f}" if cost else "-"
        lr = s["learning_rates"][method]
        lines.append(
            f"| {method} | {100 * a['mean']:.2f} ± {100 * a['std']:.2f} | "
            f"{result['trainable_parameters'][method]:,} | {step} | {memory} | {lr} |"
        )
    c, f = result["conv_parameters"], result["forward"]
    lines += [
        "",
        f"Conv parameters trained: full FT {c['full_finetuning']:,}; projection {c['projection']:,} "
        f"({100 * c['projection'] / c['full_finetuning']:.1f}%); projection without 1x1 convs "
        f"{c['projection_skip_pointwise']:,} ({100 * c['projection_skip_pointwise'] / c['full_finetuning']:.1f}%).",
        "",
        f"Forward (batch 64, base {f['base_ms']:.2f} ms): unmerged projection {f['unmerged_ratio']:.3f}x, merged "
        f"{f['merged_ratio']:.3f}x the base model (base self-noise {100 * f['base_self_noise']:.1f}%); max |logit "
        f"difference| merged vs unmerged {f['merge_max_abs_logit_diff']:.2e}.",
        "",
        "Training memory: parameters + gradients + AdamW state + activations saved for backward (batch 64), summed "
        "from the tensors of one step.",
        "",
        "## Goals",
        "",
        *[f"- {'met' if ok else 'MISSED'}: {goal}" for goal, ok in result["goals"].items()],
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, a in result["accuracy"].items():
        n = result["trainable_parameters"][method]
        ax.errorbar(n, 100 * a["mean"], yerr=100 * a["std"], fmt="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("target test accuracy (%)")
    per_class = result["setting"]["train_per_class"]
    ax.set_title(f"Digits 0-4 -> 5-9 transfer, {per_class} images/class, mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
