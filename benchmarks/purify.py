"""Knowledge purification on the four TinyLLM in-domain sets (OBQA, ARC, RiddleSense, PubMedQA), CPU scale.

    python benchmarks/purify.py                       # all domains, seeds 0 1
    python benchmarks/purify.py --domains obqa --seeds 0 --train-rows 64 --test-rows 32   # a smoke run

Per domain, `--train-rows` training rows (a seeded shuffle of the train split) and the first `--test-rows` test
rows, both teachers' real rationales (FLAN-T5-xl, Llama-2-chat):

- **Purifier quality** on the test rows: how often each purifier picks the rationale the rationale-support score
  (all-MiniLM-L6-v2) ranks best, against always picking the single best teacher on the training rows.
- **Student accuracy**, same student and budget, per seed: labels only, step-by-step with each single teacher,
  TinyLLM all-teachers, and each routing purifier. The student is an encoder-decoder warm-started from
  all-MiniLM-L6-v2 (its first 3 layers as encoder, 2 as decoder with fresh cross-attention). Accuracy is the paper's
  exact match of the generated answer, and, more sensitive at this scale, option ranking (the option with the
  lowest mean token NLL under the answer task).
- **Training time** of each run; the purified / all-teachers ratio is taken per domain and seed.

Knowledge aggregation needs an aggregator LLM, and none is available offline here: it is not run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import machine, versions
from text_tasks import TEXT_DOMAINS, TINYLLM, minilm_path
from transformers import AutoTokenizer, EncoderDecoderModel, set_seed

import hf_know.metrics
from hf_know.purification import (
    ClassifierRouter,
    PlackettLuceRouter,
    PurifiedSeq2SeqDistillConfig,
    PurifiedSeq2SeqDistillTrainer,
    ReinforceSelector,
    SentenceEncoder,
    SimilarityRouter,
    SingleTeacher,
    exact_match_accuracy,
    load_tinyllm,
    predict_answers,
    teacher_scores,
)
from hf_know.purification.data import task_prompt
from hf_know.purification.router import best_teacher_targets

RESULTS = Path(__file__).resolve().parent / "results"
ROUTERS = {"plackett_luce": PlackettLuceRouter, "classifier": ClassifierRouter, "similarity": SimilarityRouter}


def build_student(seed: int):
    set_seed(seed)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        path, path, encoder_num_hidden_layers=3, decoder_num_hidden_layers=2
    )
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@torch.no_grad()
def option_ranking_accuracy(model, tokenizer, dataset, prefix: str, max_source_length: int) -> float:
    """Share of rows whose gold option has the lowest mean token NLL as the answer-task target."""
    model.eval()
    hits = 0
    for row in dataset:
        source = tokenizer(
            task_prompt(prefix, row["question"], row["choices"]),
            truncation=True,
            max_length=max_source_length,
            return_tensors="pt",
        )
        targets = tokenizer(row["choices"], padding=True, return_tensors="pt")["input_ids"][:, 1:]
        labels = targets.masked_fill(targets == tokenizer.pad_token_id, -100)
        n = len(row["choices"])
        logits = model(
            input_ids=source["input_ids"].expand(n, -1),
            attention_mask=source["attention_mask"].expand(n, -1),
            decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels),
        ).logits
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        mean = nll.sum(1) / (labels != -100).sum(1).clamp(min=1)
        hits += row["choices"][int(mean.argmin())] == row["answer"]
    return hits / len(dataset)


def agreement(choice: list[str], teachers: list[str], scores: torch.Tensor) -> float:
    """How often `choice` is a support-best teacher, over rows where the two teachers' support differs."""
    best = best_teacher_targets(scores) > 0
    decisive = (best.sum(1) == 1) & ~scores.isnan().any(1)
    hits = [bool(best[i, teachers.index(c)]) for i, c in enumerate(choice) if decisive[i] and c in teachers]
    return sum(hits) / max(int(decisive.sum()), 1)


def train_student(name, train, test, teachers, seed, args, purifier=None, selector=None, mode="purified") -> dict:
    model, tokenizer = build_student(seed)
    with tempfile.TemporaryDirectory() as tmp:
        config = PurifiedSeq2SeqDistillConfig(
            output_dir=tmp,
            distill_mode=mode,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            max_source_length=64,
            max_target_length=32,
            seed=seed,
            data_seed=seed,
            disable_tqdm=True,
            use_cpu=True,
            logging_steps=1000,
        )
        trainer = PurifiedSeq2SeqDistillTrainer(
            model, config, train, test, tokenizer, teachers=teachers, purifier=purifier, selector=selector
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        predictions = predict_answers(model, tokenizer, test, config.answer_prefix, 16, 64)
    return {
        "setting": name,
        "seed": seed,
        "exact_match": exact_match_accuracy(predictions, test["answer"]),
        "option_ranking": option_ranking_accuracy(model, tokenizer, test, config.answer_prefix, 64),
        "train_seconds_per_epoch": seconds / args.epochs,
    }


def run_domain(domain: str, args, encoder: SentenceEncoder, log) -> dict:
    train, report = load_tinyllm(TINYLLM, domain, "train")
    train = train.shuffle(seed=0).select(range(min(args.train_rows, len(train))))
    test, _ = load_tinyllm(TINYLLM, domain, "test")
    test = test.select(range(min(args.test_rows, len(test))))
    teachers = report.teachers
    train_scores, test_scores = teacher_scores(train, encoder), teacher_scores(test, encoder)
    best_single = teachers[int(train_scores.nanmean(0).argmax())]
    quality = {f"single best teacher ({best_single})": agreement([best_single] * len(test), teachers, test_scores)}
    routers = {}
    for method, cls in ROUTERS.items():
        routers[method] = cls(teachers, encoder).fit(train, train_scores)
        quality[method] = agreement(routers[method].purify(test)["purified_teacher"], teachers, test_scores)
    runs = []
    for seed in args.seeds:
        settings = [("labels only", {"mode": "labels_only"}), ("all teachers (TinyLLM)", {"mode": "all_teachers"})]
        settings += [(f"single: {t}", {"purifier": SingleTeacher(teachers, t)}) for t in teachers]
        settings += [(method, {"purifier": router}) for method, router in routers.items()]
        for name, kwargs in settings:
            runs.append({"domain": domain, **train_student(name, train, test, teachers, seed, args, **kwargs)})
            log(runs[-1])
        selector = ReinforceSelector(teachers, encoder)
        runs.append(
            {"domain": domain, **train_student("reinforce", train, test, teachers, seed, args, selector=selector)}
        )
        log(runs[-1])
        if seed == args.seeds[0]:
            quality["reinforce"] = agreement(selector.purify(test)["purified_teacher"], teachers, test_scores)
    support_best = best_teacher_targets(train_scores).argmax(1)
    return {
        "domain": domain,
        "train_rows": len(train),
        "test_rows": len(test),
        "support_best_share": {t: float((support_best == i).float().mean()) for i, t in enumerate(teachers)},
        "purifier_agreement": quality,
        "runs": runs,
    }


def summarise(domains: list[dict]) -> dict:
    settings = list(dict.fromkeys(r["setting"] for d in domains for r in d["runs"]))

    def mean(metric, setting, domain=None):
        values = [
            r[metric]
            for d in domains
            for r in d["runs"]
            if r["setting"] == setting and d["domain"] in (domain or d["domain"])
        ]
        return statistics.mean(values)

    table = {s: {m: mean(m, s) for m in ("exact_match", "option_ranking", "train_seconds_per_epoch")} for s in settings}
    baseline, cmv = "all teachers (TinyLLM)", hf_know.metrics.load("cmv")
    routers = [s for s in ("plackett_luce", "classifier", "similarity", "reinforce") if s in table]
    summary = {"table": table, "cmv": {}, "time_ratio_vs_all_teachers": {}}
    for s in routers:
        # CMV at n = 2 teachers (the release has two), one (method, TinyLLM) accuracy pair per domain.
        summary["cmv"][s] = {
            m: cmv.compute(
                predictions=[mean(m, s, [d["domain"]]) for d in domains],
                references=[mean(m, baseline, [d["domain"]]) for d in domains],
            )["cmv"]
            for m in ("exact_match", "option_ranking")
        }
        ratios = [
            r["train_seconds_per_epoch"] / b["train_seconds_per_epoch"]
            for d in domains
            for r in d["runs"]
            for b in d["runs"]
            if r["setting"] == s and b["setting"] == baseline and r["seed"] == b["seed"]
        ]
        summary["time_ratio_vs_all_teachers"][s] = statistics.mean(ratios)
    for metric in ("exact_match", "option_ranking"):
        best = max(routers, key=lambda s: table[s][metric])
        summary[f"best_router_{metric}"] = {
            "router": best,
            "above_all_teachers": table[best][metric] - table[baseline][metric],
            "above_labels_only": table[best][metric] - table["labels only"][metric],
        }
    return summary


def write_report(result: dict) -> None:
    summary, lines = result["summary"], []
    lines += ["# Knowledge purification on TinyLLM (CPU scale)", "", f"{result['config']}", ""]
    lines += ["| setting | exact match | option ranking | train s/epoch |", "|---|---|---|---|"]
    for s, row in summary["table"].items():
        lines.append(
            f"| {s} | {row['exact_match']:.4f} | {row['option_ranking']:.4f} | {row['train_seconds_per_epoch']:.1f} |"
        )
    lines += ["", "| router | CMV (exact match) | CMV (option ranking) | time / all-teachers |", "|---|---|---|---|"]
    for s, cmv in summary["cmv"].items():
        lines.append(
            f"| {s} | {cmv['exact_match']:+.4f} | {cmv['option_ranking']:+.4f} | "
            f"{summary['time_ratio_vs_all_teachers'][s]:.3f} |"
        )
    lines += ["", "Purifier agreement with the support-best teacher on test rows:", ""]
    names = list(dict.fromkeys(k.split(" (")[0] for d in result["domains"] for k in d["purifier_agreement"]))
    lines += ["| domain | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for d in result["domains"]:
        values = {k.split(" (")[0]: v for k, v in d["purifier_agreement"].items()}
        lines.append(f"| {d['domain']} | " + " | ".join(f"{values.get(n, float('nan')):.3f}" for n in names) + " |")
    (RESULTS / "purify.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    settings = list(summary["table"])
    for ax, metric in zip(axes, ("exact_match", "option_ranking"), strict=True):
        ax.barh(settings, [summary["table"][s][metric] for s in settings])
        ax.set_title(f"{metric.replace('_', ' ')} (mean of domains and seeds)")
    fig.tight_layout()
    fig.savefig(RESULTS / "purify.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(TEXT_DOMAINS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--train-rows", type=int, default=192)
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--output", type=Path, default=RESULTS / "purify.json")
    args = parser.parse_args()
    encoder = SentenceEncoder.from_pretrained(minilm_path())
    progress = args.output.with_suffix(".runs.jsonl")
    progress.unlink(missing_ok=True)

    def log(run):
        with progress.open("a") as f:
            f.write(json.dumps(run) + "\n")

    started = time.perf_counter()
    domains = [run_domain(domain, args, encoder, log) for domain in args.domains]
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "machine": machine("cpu"),
        "versions": versions(),
        "wall_seconds": time.perf_counter() - started,
        "domains": domains,
        "summary": summarise(domains),
    }
    args.output.write_text(json.dumps(result, indent=2))
    progress.unlink(missing_ok=True)
    if args.output == RESULTS / "purify.json":
        write_report(result)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
