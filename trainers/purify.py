"""Distil several teachers' rationales into a small student, purified first (knowledge purification, TRL-style).

    python trainers/purify.py --config configs/purify/tiny.yaml
    accelerate launch --num_processes 2 --cpu trainers/purify.py --config configs/purify/tiny.yaml

Purify, then distil, then save, then push: the purifier (`--purifier`: one of aggregation, plackett_luce,
classifier, similarity, reinforce, `single_teacher:<name>`, or `none` with `--distill_mode all_teachers` or
`labels_only`) turns each question's rationales into one; `PurifiedDistillTrainer` trains the student on the answer
and that rationale; the student, its tokenizer, the router and `metrics.json` are written atomically to
`output_dir`; with `--push_to_hub` the student goes to `hub_model_id` with a model card and the router to
`<hub_model_id>-router`. Every flag of the dataclasses below and of `PurifiedDistillConfig` can be set in the YAML.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets import load_from_disk
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    set_seed,
)

from hf_know.cli import ConfigArgumentParser
from hf_know.hub import push_folder, render_model_card
from hf_know.io import atomic_output_dir, check_output_dir
from hf_know.purification import (
    PURIFIERS,
    AggregationPurifier,
    PurifiedDistillConfig,
    PurifiedDistillTrainer,
    SentenceEncoder,
    SingleTeacher,
    load_router,
    load_tinyllm,
    validate_rationale_data,
)
from hf_know.purification.purifiers import ROUTERS
from hf_know.testing.rationales import (
    TOY_TEACHERS,
    rationale_texts,
    tiny_sentence_encoder,
    tiny_t5,
    toy_rationale_data,
    word_tokenizer,
)


@dataclass
class ScriptArguments:
    """The data: `toy` (synthetic arithmetic, see hf_know.testing.rationales), `tinyllm/<domain>` (read from
    `tinyllm_root`), or a folder written by `Dataset.save_to_disk` in the rationale schema (with `eval_dataset`)."""

    dataset: str = field(default="toy", metadata={"help": "toy, tinyllm/<domain>, or a saved dataset folder."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Saved eval dataset (folder datasets)."})
    teachers: list[str] | None = field(default=None, metadata={"help": "Teacher names of a saved dataset."})
    tinyllm_root: str = field(default="../shared/data/tinyllm", metadata={"help": "The TinyLLM release."})
    toy_rows: int = field(default=128, metadata={"help": "Rows of the toy set (3/4 train, 1/4 eval)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Use only the first N eval rows."})


@dataclass
class ModelArguments:
    """The student (a folder or Hub id, else a tiny model built from config with a word-level tokenizer of the
    data) and the sentence encoder routers use (else a tiny random BERT on that tokenizer)."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Student: seq2seq or causal LM."})
    student_architecture: str = field(default="t5", metadata={"help": "From-scratch student: t5 or llama."})
    router_encoder: str | None = field(default=None, metadata={"help": "Sentence encoder of the routers."})


@dataclass
class PurifyArguments:
    """How each question's rationales become one."""

    purifier: str = field(
        default="similarity", metadata={"help": f"One of {PURIFIERS}, single_teacher:<name>, or none."}
    )
    router_name_or_path: str | None = field(default=None, metadata={"help": "Use this fitted router as is."})
    router_epochs: int = field(default=30, metadata={"help": "Training epochs of a classifier/similarity router."})
    aggregator_model: str | None = field(default=None, metadata={"help": "Local aggregator LLM (aggregation)."})
    aggregator_endpoint: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL (aggregation)."})
    aggregator_endpoint_model: str = field(default="default", metadata={"help": "Model name at the endpoint."})


@dataclass
class TrainingArguments(PurifiedDistillConfig):
    """`PurifiedDistillConfig` with this script's output folder."""

    output_dir: str = field(default="outputs/purify", metadata={"help": "Where the result is written."})


def load_data(script_args: ScriptArguments):
    """(train, eval, teacher names)."""
    if script_args.dataset == "toy":
        data = toy_rationale_data(script_args.toy_rows, seed=0)
        cut = len(data) * 3 // 4
        train, test, teachers = data.select(range(cut)), data.select(range(cut, len(data))), list(TOY_TEACHERS)
    elif script_args.dataset.startswith("tinyllm/"):
        domain = script_args.dataset.split("/", 1)[1]
        (train, report), (test, _) = (load_tinyllm(script_args.tinyllm_root, domain, s) for s in ("train", "test"))
        teachers = report.teachers
    else:
        if not script_args.eval_dataset or not script_args.teachers:
            raise ValueError(f"dataset={script_args.dataset!r} is a saved dataset: set eval_dataset and teachers too.")
        train, test = load_from_disk(script_args.dataset), load_from_disk(script_args.eval_dataset)
        teachers = script_args.teachers
    if script_args.max_train_rows:
        train = train.select(range(min(script_args.max_train_rows, len(train))))
    if script_args.max_eval_rows:
        test = test.select(range(min(script_args.max_eval_rows, len(test))))
    return train, test, teachers


def build_student(model_args: ModelArguments, train):
    if model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        return auto.from_pretrained(model_args.model_name_or_path), tokenizer
    tokenizer = word_tokenizer(rationale_texts(train))
    if model_args.student_architecture == "t5":
        return tiny_t5(len(tokenizer)), tokenizer
    if model_args.student_architecture == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=1,
                             bos_token_id=1)  # fmt: skip
        return LlamaForCausalLM(config), tokenizer
    raise ValueError(f"student_architecture={model_args.student_architecture!r}; expected 't5' or 'llama'.")


def build_purifier(purify_args: PurifyArguments, model_args: ModelArguments, teachers, train, tokenizer, seed: int):
    """(purifier or None, RL selector or None)."""
    name = purify_args.purifier
    if name == "none":
        return None, None
    if name.startswith("single_teacher:"):
        return SingleTeacher(teachers, name.split(":", 1)[1]), None
    if name == "aggregation":
        if purify_args.aggregator_endpoint:
            return AggregationPurifier(teachers, endpoint=purify_args.aggregator_endpoint,
                                       endpoint_model=purify_args.aggregator_endpoint_model), None  # fmt: skip
        if not purify_args.aggregator_model:
            raise ValueError("purifier='aggregation' needs aggregator_model or aggregator_endpoint.")
        model = AutoModelForCausalLM.from_pretrained(purify_args.aggregator_model)
        return AggregationPurifier(teachers, model, AutoTokenizer.from_pretrained(purify_args.aggregator_model)), None
    if name not in ROUTERS:
        raise ValueError(f"purifier={name!r}; expected one of {PURIFIERS}, 'single_teacher:<name>' or 'none'.")
    if purify_args.router_name_or_path:
        router = load_router(purify_args.router_name_or_path)
        if router.method != name:
            raise ValueError(f"router_name_or_path holds a {router.method} router, but purifier={name!r}.")
        return (None, router) if name == "reinforce" else (router, None)
    encoder = (
        SentenceEncoder.from_pretrained(model_args.router_encoder)
        if model_args.router_encoder
        else tiny_sentence_encoder(tokenizer)
    )
    router = ROUTERS[name](teachers, encoder)
    if name == "reinforce":
        return None, router
    fit_kwargs = {} if name == "plackett_luce" else {"epochs": purify_args.router_epochs, "seed": seed}
    return router.fit(train, **fit_kwargs), None


OUTPUT_KIND = "purify"


def script_inputs(script_args, model_args, purify_args) -> list[str | None]:
    """Every path the run reads, which its output may not be, contain or lie inside."""
    data = [script_args.tinyllm_root] if script_args.dataset.startswith("tinyllm/") else [script_args.dataset]
    models = [model_args.model_name_or_path, model_args.router_encoder]
    return [*data, script_args.eval_dataset, *models, purify_args.router_name_or_path, purify_args.aggregator_model]


def main(script_args, model_args, purify_args, training_args) -> dict:
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    if push and not hub_model_id:
        raise ValueError("push_to_hub is set but hub_model_id is not: name the Hub repo to push to.")
    inputs = script_inputs(script_args, model_args, purify_args)
    output = dict(kind=OUTPUT_KIND, inputs=inputs, overwrite=training_args.overwrite_output_dir)
    check_output_dir(training_args.output_dir, **output)  # before any work; written atomically at the end
    training_args = dataclasses.replace(training_args, push_to_hub=False)  # pushed once, with our card, below
    set_seed(training_args.seed)
    train, test, teachers = load_data(script_args)
    validate_rationale_data(train, teachers)
    validate_rationale_data(test, teachers)
    model, tokenizer = build_student(model_args, train)
    purifier, selector = build_purifier(purify_args, model_args, teachers, train, tokenizer, training_args.seed)
    trainer = PurifiedDistillTrainer(model, training_args, train, test, tokenizer, teachers=teachers,
                                     purifier=purifier, selector=selector)  # fmt: skip
    result = trainer.train()
    metrics = {**trainer.evaluate(), "train_runtime": result.metrics["train_runtime"]}
    router = selector or (purifier if hasattr(purifier, "save_pretrained") else None)
    chosen = selector.purify(train) if selector else trainer.rationale_data
    if "purified_teacher" in chosen.column_names:
        metrics["chosen_teachers"] = dict(Counter(chosen["purified_teacher"]))
    if trainer.is_world_process_zero():
        student = trainer.accelerator.unwrap_model(trainer.model)
        with atomic_output_dir(training_args.output_dir, **output) as tmp:
            student.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if router is not None:
                router.save_pretrained(tmp / "router")
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if push:
            output = Path(training_args.output_dir)
            router_repo = f"{hub_model_id}-router" if router is not None else None
            if router_repo:
                push_folder(output / "router", router_repo, token=training_args.hub_token)
            card = render_model_card(
                "purify",
                {
                    "library_name": "transformers",
                    "pipeline_tag": "text2text-generation" if student.config.is_encoder_decoder else "text-generation",
                    "tags": ["hf-know", "knowledge-purification", "distillation", purify_args.purifier],
                    "metrics": ["accuracy"],
                },
                model_name=hub_model_id.split("/")[-1],
                repo_id=hub_model_id,
                auto_class="AutoModelForSeq2SeqLM" if student.config.is_encoder_decoder else "AutoModelForCausalLM",
                teachers=teachers,
                purifier=purify_args.purifier,
                distill_mode=training_args.distill_mode,
                rationale_weight=training_args.rationale_weight,
                dataset=script_args.dataset,
                train_rows=len(train),
                eval_rows=len(test),
                router_repo=router_repo,
                metrics=metrics,
            )
            push_folder(output, hub_model_id, card, token=training_args.hub_token)
    return metrics


def make_parser() -> ConfigArgumentParser:
    return ConfigArgumentParser((ScriptArguments, ModelArguments, PurifyArguments, TrainingArguments))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
