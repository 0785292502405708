"""Knowledge purification with a real pretrained student and four real teachers, every arm side by side.

    python benchmarks/purify.py --learning-check     # CPU: OBQA, every arm at a smoke budget, and the README recipe
    python benchmarks/purify.py --scale smoke        # minutes: the pipeline end to end
    python benchmarks/purify.py --device cuda --bf16 --scale paper --workers 16   # GPU: 4 domains, 3 seeds
    python benchmarks/purify.py --domains obqa arc --output benchmarks/results/purify_ood   # out of domain

Student: SmolLM2-135M-Instruct (`hf_know.local_models`) with a LoRA adapter (r 16, all linear layers), trained by
`PurifiedDistillTrainer` on the answer task plus the arm's rationales, scored on the test rows by option ranking
(`hf_know.purification.ranking`) and, with `--exact-match`, by the paper's exact match of the generated answer.
Teachers: FLAN-T5-xl and Llama-2-chat (TinyLLM's released rationales), SmolLM2-135M-Instruct and Gemma-3-270M (run
here, `purify_teachers.py`): two strong teachers and two weak ones, the conflict purification is for.

Arms, same student, data and budget per seed: zero-shot, labels only, each single teacher, TinyLLM all-teachers,
aggregation (the local instruction LLM rewrites), Plackett-Luce, PLM classifier, similarity router, RL selector,
and the oracle (per question, the teacher whose rationale best supports the gold answer: the routers' own label, so
the ceiling of routing). Routers and the oracle label rows by rationale support (MiniLM; TinyLLM's teachers have
no unforced answers). With several domains the routers also run out of domain (fitted on the other domains).
With `--teacher-counts 2 3 4` the all-teachers baseline and the purifiers also run with the first 2 and 3 teachers,
which gives the paper's CMV (mean over teacher counts of purifier minus all-teachers accuracy).

Every (domain, teacher count, seed, arm) run is cached under `benchmarks/.cache/purify/<scale>/`, so a stopped run
resumes; `--workers N` trains N students at once (on one large GPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import machine, versions
from datasets import Dataset, concatenate_datasets, load_from_disk
from peft import LoraConfig, PeftModel
from purify_teachers import CACHE, TEACHERS, aggregated, four_teacher_data, tinyllm_rows
from text_tasks import TEXT_DOMAINS, TINYLLM, minilm_path
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

import hf_know.metrics
from hf_know.local_models import local_causal_lm
from hf_know.purification import (
    ClassifierRouter,
    PlackettLuceRouter,
    PurifiedDistillConfig,
    PurifiedDistillTrainer,
    ReinforceSelector,
    SentenceEncoder,
    SimilarityRouter,
    SingleTeacher,
    exact_match_accuracy,
    predict_answers,
    teacher_scores,
)
from hf_know.purification.data import task_prompt
from hf_know.purification.purifier import select_rationales
from hf_know.purification.ranking import option_log_likelihoods, rank_options
from hf_know.purification.router import best_teacher_targets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "configs" / "purify" / "smollm2_obqa.yaml"
STUDENT = "smollm2-135m-instruct"
ROUTERS = {"plackett_luce": PlackettLuceRouter, "classifier": ClassifierRouter, "similarity": SimilarityRouter}
PURIFIERS = ("aggregation", *ROUTERS, "reinforce")
SCALES = {
    # rows: training questions (a prefix of one seeded shuffle), test rows scored (a prefix of the test split), test
    # rows with every teacher's rationale (router agreement). The paper scale aims at the 8 minutes on one
    # H200 (1000 training rows per domain, one epoch, 16 students at once); it has never run on a GPU, so its time
    # is unmeasured.
    "smoke": dict(domains=["obqa"], seeds=[0], train_rows=16, test_rows=16, agreement_rows=16, epochs=1.0),
    "cpu": dict(domains=["obqa"], seeds=[0], train_rows=64, test_rows=300, agreement_rows=100, epochs=1.0),
    "paper": dict(
        domains=list(TEXT_DOMAINS), seeds=[0, 1, 2], train_rows=1000, test_rows=None, agreement_rows=300, epochs=1.0
    ),
}


# ---- purified training sets ----------------------------------------------------------------------------------------
def first_teachers(data: Dataset, count: int) -> Dataset:
    """The data with only its first `count` teachers."""
    columns = ("rationales", "teacher_answers", "stated_answers")
    return data.map(lambda row: {c: row[c][:count] for c in columns})


def oracle(data: Dataset, teachers: list[str], scores: torch.Tensor) -> Dataset:
    """Per row, the teacher whose rationale best supports the gold answer: the label every router learns."""
    return select_rationales(data, scores.nan_to_num(-math.inf), teachers, "oracle")


def agreement(chosen: list[str], teachers: list[str], scores: torch.Tensor) -> float:
    """Share of rows (with a rationale) whose chosen teacher is one of the best-supported ones."""
    best = best_teacher_targets(scores) > 0
    rows = [i for i, c in enumerate(chosen) if c in teachers]
    return sum(bool(best[i, teachers.index(chosen[i])]) for i in rows) / max(len(rows), 1)


def arm_folder(args, domain: str, count: int, seed: int, arm: str) -> Path:
    """Where an arm's purified training set (or, for `agreement.json`, the routers' quality) is cached."""
    return args.cache / "purified" / f"{domain}-n{count}-seed{seed}" / arm.replace(":", "_")


def fit_router(method: str, teachers: list[str], encoder, data: Dataset, scores: torch.Tensor, seed: int):
    set_seed(seed)
    router = ROUTERS[method](teachers, encoder)
    return router.fit(data, scores) if method == "plackett_luce" else router.fit(data, scores, seed=seed)


def purified_sets(domain: str, count: int, seed: int, args, encoder: SentenceEncoder) -> dict:
    """Per arm, the training set it distils from (saved under the cache), and the routers' agreement with the
    oracle on the agreement rows; computed once per (domain, teacher count, seed). A record made without the
    out-of-domain arms this run needs gains them (the arms already saved are kept as they are); one whose
    out-of-domain routers were fitted on other domains than this run's is refused."""
    done = arm_folder(args, domain, count, seed, "agreement.json")
    others = [d for d in args.domains if d != domain]
    if done.is_file():
        cached = json.loads(done.read_text())
        fitted_on = cached.get("ood_fitted_on", [])
        if fitted_on == others or not others:
            return cached
        if fitted_on:
            raise ValueError(
                f"{done}: the cached out-of-domain routers of {domain} were fitted on {fitted_on}, this run's other "
                f"domains are {others}; run the domains of the run that cached it, or another --scale (its own cache)."
            )
    train, teachers = teacher_sets(domain, "train", args)
    probe, _ = teacher_sets(domain, "test", args)
    train, probe, teachers = first_teachers(train, count), first_teachers(probe, count), teachers[:count]
    scores, probe_scores = teacher_scores(train, encoder), teacher_scores(probe, encoder)
    sets = {"oracle": oracle(train, teachers, scores)}
    if count == len(TEACHERS):
        sets.update({f"single:{t}": SingleTeacher(teachers, t).purify(train) for t in teachers})
    sets["aggregation"] = aggregated(
        train, teachers, domain, args.train_rows, args.device, args.bf16, args.generation_batch
    )
    fits = {"": (train, scores)}  # arm-name prefix -> the rows a router is fitted on, and their labels
    if others:  # out of domain: fitted on the other domains' questions only, never on this one's
        pooled = concatenate_datasets([first_teachers(teacher_sets(d, "train", args)[0], count) for d in others])
        fits["ood:"] = (pooled, teacher_scores(pooled, encoder))
    quality = {"oracle": 1.0}
    for method in ROUTERS:
        for prefix, (data, labels) in fits.items():
            arm = prefix + method
            router = fit_router(method, teachers, encoder, data, labels, seed)
            sets[arm] = router.purify(train)
            quality[arm] = agreement(router.purify(probe)["purified_teacher"], teachers, probe_scores)
    for arm, data in sets.items():
        folder = arm_folder(args, domain, count, seed, arm)
        if not folder.exists():  # a cached arm's runs trained on the set saved there
            data.save_to_disk(folder)
    result = {
        "ood_fitted_on": others,
        "quality": quality,
        "support_best_share": dict(
            zip(teachers, (best_teacher_targets(scores) > 0).float().mean(0).tolist(), strict=True)
        ),
        "supports_gold": dict(zip(teachers, (scores > 0).float().mean(0).tolist(), strict=True)),
        "arms": sorted(sets),
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def teacher_sets(domain: str, split: str, args):
    rows = args.train_rows if split == "train" else args.agreement_rows
    return four_teacher_data(domain, split, rows, args.device, args.bf16, args.generation_batch, args.teacher_tokens)


# ---- one student run -----------------------------------------------------------------------------------------------
def arm_inputs(job: dict, args) -> dict:
    """The trainer inputs of one arm: distill mode, training set, teachers, RL selector."""
    arm, count = job["arm"], job["count"]
    train, teachers = teacher_sets(job["domain"], "train", args)
    train, teachers = first_teachers(train, count), list(teachers[:count])
    inputs = {"mode": "purified", "train": train, "teachers": teachers, "selector": None}
    if arm in ("labels_only", "all_teachers"):
        inputs["mode"] = arm
    elif arm == "reinforce":
        inputs["selector"] = ReinforceSelector(teachers, encoder())
    else:
        inputs["train"] = load_from_disk(arm_folder(args, job["domain"], count, job["seed"], arm))
    return inputs


def test_rows(domain: str, args) -> Dataset:
    return tinyllm_rows(domain, "test", args.test_rows)


def score(model, tokenizer, test: Dataset, prefix: str, args) -> dict:
    batch = 256 if args.device != "cpu" else 32
    prompt = lambda row: task_prompt(prefix, row["question"], row["choices"])  # noqa: E731
    ranked = rank_options(option_log_likelihoods(model, tokenizer, test, prompt, batch), test)
    result = {"correct": [int(p == a) for p, a in zip(ranked, test["answer"], strict=True)]}
    result["option_ranking"] = statistics.mean(result["correct"])
    if args.exact_match:
        predictions = predict_answers(model, tokenizer, test, prefix, batch_size=batch)
        result["exact_match"] = exact_match_accuracy(predictions, test["answer"])
    return result


def run_student(job: dict, args) -> dict:
    """Train one student (or score the untrained one, arm `zero_shot`) and score it on the test rows."""
    path = local_causal_lm(STUDENT)
    tokenizer = AutoTokenizer.from_pretrained(path)
    set_seed(job["seed"])
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(args.device)
    test = test_rows(job["domain"], args)
    config_prefix = PurifiedDistillConfig.answer_prefix
    if job["arm"] == "zero_shot":
        return {**job, **score(model, tokenizer, test, config_prefix, args), "train_seconds": 0.0}
    inputs = arm_inputs(job, args)
    with tempfile.TemporaryDirectory() as tmp:
        config = PurifiedDistillConfig(
            output_dir=tmp,
            distill_mode=inputs["mode"],
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            max_length=args.max_length,
            gradient_checkpointing=False,
            seed=job["seed"],
            data_seed=job["seed"],
            use_cpu=args.device == "cpu",
            bf16=args.bf16,
            logging_steps=25,
            disable_tqdm=not args.progress,
            report_to="none",
        )
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = PurifiedDistillTrainer(
            model,
            config,
            inputs["train"],
            processing_class=tokenizer,
            teachers=inputs["teachers"],
            selector=inputs["selector"],
            peft_config=lora,
        )
        train = trainer.train()
        result = score(trainer.model, tokenizer, test, config.answer_prefix, args)
    return {
        **job,
        **result,
        "train_seconds": train.metrics["train_runtime"],
        "train_examples": len(trainer.train_dataset),
        "train_loss": train.training_loss,
    }


COMPUTED = {"runs": 0}  # student runs this invocation computed (in-process workers only)


def cached_run(job: dict, args) -> dict:
    path = args.cache / "runs" / ("{domain}-n{count}-seed{seed}-{arm}".format(**job).replace(":", "_") + ".json")
    if path.is_file():
        return json.loads(path.read_text())
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_student(job, args)
    COMPUTED["runs"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def run_all(jobs: list[dict], args) -> list[dict]:
    """Every job, `args.workers` at a time (processes sharing the device), in job order."""
    if args.workers <= 1:
        return [cached_run(job, args) for job in tqdm(jobs, desc="student runs")]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [pool.submit(cached_run, job, args) for job in jobs]
        return [future.result() for future in tqdm(futures, desc="student runs")]


def jobs_for(args, purified: dict) -> list[dict]:
    jobs = []
    for domain in args.domains:
        for seed in args.seeds:
            jobs += [{"domain": domain, "count": len(TEACHERS), "seed": seed, "arm": "zero_shot"}] if seed == 0 else []
            for count in args.teacher_counts:
                arms = ["all_teachers", *(a for a in purified[(domain, count, seed)]["arms"]), "reinforce"]
                if count == len(TEACHERS):
                    arms = ["labels_only", *arms]
                jobs += [{"domain": domain, "count": count, "seed": seed, "arm": arm} for arm in arms]
    return jobs


# ---- statistics and report -----------------------------------------------------------------------------------------
def paired_bootstrap(a: list[float], b: list[float], samples: int = 10000, seed: int = 0) -> dict:
    """Mean of a - b over paired rows, its 95% interval and a two-sided p-value, by resampling rows."""
    diff = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    means = diff[torch.randint(len(diff), (samples, len(diff)), generator=generator)].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    p = min(1.0, 2 * min(float((means <= 0).double().mean()), float((means >= 0).double().mean())))
    return {"difference": float(diff.mean()), "ci95": [low, high], "p": p}


def mcnemar(a: list[int], b: list[int]) -> dict:
    """Exact McNemar test of paired right/wrong outcomes: rows only a gets right vs rows only b gets right."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail) if n else 1.0}


def runs_of(runs: list[dict], domain: str, count: int, arm: str) -> list[dict]:
    """The runs (one per seed) of an arm with `count` teachers on `domain`."""
    return [r for r in runs if (r["domain"], r["count"], r["arm"]) == (domain, count, arm)]


def per_row(runs: list[dict], domain: str, count: int, arm: str) -> list[float]:
    """Per test row, the arm's correctness averaged over seeds."""
    chosen = [r["correct"] for r in runs_of(runs, domain, count, arm)]
    return [statistics.mean(values) for values in zip(*chosen, strict=True)] if chosen else []


def summarise(runs: list[dict], purified: dict, args) -> dict:
    full = len(TEACHERS)
    arms = list(dict.fromkeys(r["arm"] for r in runs if r["count"] == full))
    table, paired, cmv = {}, {}, {}
    for domain in args.domains:
        for arm in arms:
            chosen = runs_of(runs, domain, full, arm)
            values, times = [r["option_ranking"] for r in chosen], [r["train_seconds"] for r in chosen]
            table.setdefault(domain, {})[arm] = {
                "mean": statistics.mean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values),
                "train_seconds": statistics.median(times),  # robust to a run slowed by other load
            }
            if "exact_match" in runs[0]:
                table[domain][arm]["exact_match"] = statistics.mean(r["exact_match"] for r in chosen)
            if arm != "all_teachers":
                baseline = per_row(runs, domain, full, "all_teachers")
                paired.setdefault(domain, {})[arm] = paired_bootstrap(per_row(runs, domain, full, arm), baseline)
        for arm in ("oracle", *PURIFIERS, *(f"ood:{m}" for m in ROUTERS)):
            gaps = []
            for count in args.teacher_counts:
                ours = [r["option_ranking"] for r in runs_of(runs, domain, count, arm)]
                base = [r["option_ranking"] for r in runs_of(runs, domain, count, "all_teachers")]
                if ours and base:
                    gaps.append((statistics.mean(ours), statistics.mean(base)))
            if gaps:
                metric = hf_know.metrics.load("cmv")
                value = metric.compute(predictions=[g[0] for g in gaps], references=[g[1] for g in gaps])["cmv"]
                cmv.setdefault(domain, {})[arm] = value
    ratios = {}
    for arm in ("oracle", *PURIFIERS):
        pairs = [
            (r["train_seconds"], b["train_seconds"])
            for r in runs
            for b in runs
            if r["arm"] == arm
            and b["arm"] == "all_teachers"
            and (r["domain"], r["count"], r["seed"]) == (b["domain"], b["count"], b["seed"])
            and r["count"] == full
        ]
        if pairs:  # the median of the per-seed ratios: other load on shared cores can only slow a run down
            ratios[arm] = statistics.median(a / b for a, b in pairs)
    routers = [a for a in (*ROUTERS, "reinforce") if all(a in table[d] for d in args.domains)]
    average = {a: statistics.mean(table[d][a]["mean"] for d in args.domains) for a in arms}
    best = max(routers, key=average.get)
    return {
        "table": table,
        "paired_vs_all_teachers": paired,
        "cmv": cmv,
        "time_ratio_vs_all_teachers": ratios,
        "average": average,
        "best_router": {
            "router": best,
            "above_all_teachers": average[best] - average["all_teachers"],
            "positive_domains": sum(paired[d][best]["difference"] > 0 for d in args.domains),
            "oracle_above_all_teachers": average["oracle"] - average["all_teachers"],
        },
        "purifier_agreement_with_oracle": {
            f"{d}-seed{s}": purified[(d, len(TEACHERS), s)]["quality"] for d in args.domains for s in args.seeds
        },
    }


def fmt(value: float, std: float | None = None) -> str:
    return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def write_report(result: dict, path: Path) -> None:
    summary, config = result["summary"], result["config"]
    lines = [
        f"# Knowledge purification on a real student (scale `{config['scale']}`)",
        "",
        f"Student SmolLM2-135M-Instruct + LoRA r16 (all linear layers), {config['epochs']} epoch(s), batch "
        f"{config['batch_size']}, LR {config['learning_rate']}, max length {config['max_length']}; seeds "
        f"{config['seeds']}; training rows {config['train_rows'] or 'all'}, test rows {config['test_rows'] or 'all'} "
        f"per domain. Teachers: {', '.join(TEACHERS)}. Device {result['machine']['device']}, "
        f"{result['machine']['torch_threads']} threads, load average at start {result['load_average']}; "
        f"{result['compute_minutes']:.1f} min of student runs ({result['computed']} computed now).",
        "",
        "Accuracy: option ranking on the test rows (percent; mean ± std over seeds when there are several). "
        "Paired: arm minus TinyLLM all-teachers per test row (seeds averaged), paired bootstrap 95% interval and p.",
    ]
    for domain, rows in summary["table"].items():
        header = "| arm | accuracy | vs all-teachers | p | train s (median) |"
        lines += ["", f"## {domain}", "", header, "|---|---|---|---|---|"]
        for arm, row in rows.items():
            paired = summary["paired_vs_all_teachers"].get(domain, {}).get(arm)
            versus = "-"
            if paired:
                low, high = paired["ci95"]
                versus = f"{100 * paired['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
            p = f"{paired['p']:.2f}" if paired else "-"
            em = f" (exact match {fmt(row['exact_match'])})" if "exact_match" in row else ""
            lines.append(
                f"| {arm} | {fmt(row['mean'], row['std'] if row['seeds'] > 1 else None)}{em} | {versus} | {p} | "
                f"{row['train_seconds']:.0f} |"
            )
    lines += [
        "",
        "## Purifiers",
        "",
        "| purifier | CMV per domain (points) | train time / all-teachers (median over seeds) |",
        "|---|---|---|",
    ]
    for arm in ("oracle", *PURIFIERS, *(f"ood:{m}" for m in ROUTERS)):
        cmv = {d: v[arm] for d, v in summary["cmv"].items() if arm in v}
        if cmv or arm in summary["time_ratio_vs_all_teachers"]:
            ratio = summary["time_ratio_vs_all_teachers"].get(arm)
            text = ", ".join(f"{d} {100 * v:+.1f}" for d, v in cmv.items()) or "-"
            lines.append(f"| {arm} | {text} | {ratio:.2f} |" if ratio else f"| {arm} | {text} | - |")
    lines += [
        "",
        f"CMV: mean over teacher counts {config['teacher_counts']} of (purifier - all-teachers) accuracy.",
        "",
        "Router agreement with the oracle (share of agreement rows routed to a best-supported teacher), and each "
        "teacher's share of rationales that support the gold answer (MiniLM margin > 0) on the training rows:",
        "",
    ]
    for key, quality in summary["purifier_agreement_with_oracle"].items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in quality.items()))
    for key, teachers in result["teachers"].items():
        support = ", ".join(f"{t} {v:.2f}" for t, v in teachers["supports_gold"].items())
        right = ", ".join(f"{t} {v:.2f}" for t, v in teachers["answer_accuracy"].items())
        lines.append(f"- {key}: supports gold {support}; own answer right (option ranking) {right}")
    best = summary["best_router"]
    lines += [
        "",
        "## Goals",
        "",
        f"- Best router ({best['router']}) minus all-teachers, averaged over domains: "
        f"{100 * best['above_all_teachers']:+.1f} points (goal +2), positive in {best['positive_domains']} of "
        f"{len(summary['table'])} domain(s) (goal 3 of 4). The oracle's room: "
        f"{100 * best['oracle_above_all_teachers']:+.1f} points.",
    ]
    ratios = summary["time_ratio_vs_all_teachers"]
    if ratios:
        low, high = min(ratios.values()), max(ratios.values())
        lines.append(f"- Purified training time / all-teachers: {low:.2f}-{high:.2f} (goal <= 0.75).")
    if "learning_check" in result:
        check = result["learning_check"]
        lines.append(
            f"- Learning check (`{check['recipe']}`, {check['train_seconds'] / 60:.0f} min of training): zero-shot "
            f"{fmt(check['zero_shot'])} -> {fmt(check['trained'])}, McNemar p = {check['mcnemar']['p']:.3g} "
            f"({check['mcnemar']['only_a']} rows only the trained student gets right, {check['mcnemar']['only_b']} "
            "only the zero-shot one)."
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(summary, path.with_suffix(".png"))


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(summary["table"])
    fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 5), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        rows = summary["table"][domain]
        arms = list(rows)
        ax.barh(arms, [100 * rows[a]["mean"] for a in arms], xerr=[100 * rows[a]["std"] for a in arms])
        ax.axvline(100 * rows["all_teachers"]["mean"], color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{domain}: option ranking accuracy (%)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_check(args) -> dict:
    """The README's recipe (`configs/purify/smollm2_obqa.yaml`) run by its script, then scored like every arm and
    paired by test row with the untrained student: does distillation teach this student anything here?"""
    domain, seed = "obqa", 0
    output = args.cache / "recipe"
    if not (output / "metrics.json").is_file():
        command = [sys.executable, str(ROOT / "trainers" / "purify.py"), "--config", str(RECIPE)]
        command += ["--output_dir", str(output), "--tinyllm_root", str(TINYLLM), "--seed", str(seed)]
        subprocess.run(command, check=True, cwd=ROOT)
    job = {"domain": domain, "count": len(TEACHERS), "seed": seed}
    zero = cached_run({**job, "arm": "zero_shot"}, args)
    path = args.cache / "runs" / "recipe.json"
    if not path.is_file():
        tokenizer = AutoTokenizer.from_pretrained(output)
        base = AutoModelForCausalLM.from_pretrained(local_causal_lm(STUDENT)).to(args.device)
        model = PeftModel.from_pretrained(base, output)
        prefix = PurifiedDistillConfig.answer_prefix  # the recipe's (a default it keeps)
        path.write_text(json.dumps(score(model, tokenizer, test_rows(domain, args), prefix, args)))
    trained = json.loads(path.read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "domain": domain,
        "zero_shot": zero["option_ranking"],
        "trained": trained["option_ranking"],
        "train_seconds": metrics["train_runtime"],
        "chosen_teachers": metrics.get("chosen_teachers"),
        "mcnemar": mcnemar(trained["correct"], zero["correct"]),
    }


def teacher_report(args) -> dict:
    report = {}
    for domain in args.domains:
        data = [teacher_sets(domain, split, args)[0] for split in ("train", "test")]
        answers = [(a, row["answer"]) for part in data for row in part for a in [row["teacher_answers"]]]
        accuracy = {
            t: statistics.mean(int(given[j] == gold) for given, gold in answers)
            for j, t in enumerate(TEACHERS)
            if all(given[j] for given, _ in answers)
        }
        support = purified_sets(domain, len(TEACHERS), args.seeds[0], args, encoder())["supports_gold"]
        report[domain] = {"answer_accuracy": accuracy, "supports_gold": support}
    return report


@functools.cache
def encoder() -> SentenceEncoder:
    """all-MiniLM-L6-v2: the routers' question encoder and the rationale-support scorer."""
    return SentenceEncoder.from_pretrained(minilm_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="cpu")
    parser.add_argument("--domains", nargs="+", help="Override the scale's domains.")
    parser.add_argument("--seeds", nargs="+", type=int, help="Override the scale's seeds.")
    parser.add_argument("--teacher-counts", nargs="+", type=int, help="Default: 4 (2 3 4 at paper scale).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--exact-match", action="store_true", help="Also generate answers (paper scale: on).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--teacher-tokens", type=int, default=64, help="New tokens of a local teacher's rationale.")
    parser.add_argument("--generation-batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="Students trained at once (processes).")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default).")
    parser.add_argument("--learning-check", action="store_true", help="Also the README recipe against zero-shot.")
    parser.add_argument("--progress", action="store_true", help="Trainer progress bars.")
    parser.add_argument(
        "--output", type=Path, default=None, help="Results path without suffix. Default: results/purify[_<scale>]."
    )
    args = parser.parse_args()
    for key, value in SCALES[args.scale].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.teacher_counts = args.teacher_counts or ([2, 3, 4] if args.scale == "paper" else [len(TEACHERS)])
    args.exact_match = args.exact_match or args.scale == "paper"
    args.cache = CACHE / args.scale
    load = list(os.getloadavg())
    started = time.perf_counter()
    purified = {
        (d, n, s): purified_sets(d, n, s, args, encoder())
        for d in args.domains
        for n in args.teacher_counts
        for s in args.seeds
    }
    runs = run_all(jobs_for(args, purified), args)
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(args.device),
        "versions": versions(),
        "load_average": [round(x, 2) for x in load],
        "wall_seconds": time.perf_counter() - started,
        "compute_minutes": sum(r["train_seconds"] for r in runs) / 60,
        "computed": COMPUTED["runs"],
        "teachers": teacher_report(args),
        "summary": summarise(runs, purified, args),
        "runs": [{k: v for k, v in r.items() if k != "correct"} for r in runs],
    }
    if args.learning_check:
        result["learning_check"] = learning_check(args)
    suffix = "" if args.scale == "cpu" else f"_{args.scale}"
    path = (args.output or RESULTS / f"purify{suffix}").with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    write_report(result, path)
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
