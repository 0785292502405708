"""Distil several teachers' rationales into a small student, purified first (knowledge purification, trl-style).

```bash
hf-know purify --config configs/purify/tiny.yaml
python trainers/purify.py --config configs/purify/tiny.yaml --use_peft --lora_r 16
accelerate launch --config_file configs/accelerate/cpu_2proc.yaml trainers/purify.py \
    --config configs/purify/tiny.yaml
```

Purify, distil, save, push: the purifier (`--purifier`: aggregation, plackett_luce, classifier, similarity,
reinforce, `single_teacher:<name>`, or `none` with `--distill_mode all_teachers` / `labels_only`) turns each
question's rationales into one; [`PurifiedDistillTrainer`] (causal students) or [`PurifiedSeq2SeqDistillTrainer`]
(encoder-decoder ones) trains on the answer and that rationale; the student (or its LoRA adapter with `--use_peft`),
tokenizer, router and `metrics.json` are written atomically to `output_dir`; with `--push_to_hub` the student goes
to `hub_model_id` with trl's model card (tags, the paper's citation, a link to the router) and the router to
`<hub_model_id>-router`.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets import load_from_disk
from huggingface_hub import ModelCard
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, set_seed
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from ..cli import parse
from ..hub import push_folder
from ..io import atomic_output_dir, check_output_dir, claim_output_dir
from ..local_models import resolve
from ..purification import (
    PURIFIERS,
    AggregationPurifier,
    PurifiedDistillConfig,
    PurifiedDistillTrainer,
    PurifiedSeq2SeqDistillConfig,
    PurifiedSeq2SeqDistillTrainer,
    SentenceEncoder,
    SingleTeacher,
    load_router,
    load_tinyllm,
    toy,
    validate_rationale_data,
)
from ..purification.purifiers import ROUTERS

OUTPUT_KIND = "purify"


@dataclass
class PurifyArguments(ScriptArguments):
    """The data, the purifier and the router.

    `dataset_name` is `toy` (synthetic arithmetic, see `hf_know.purification.toy`), `tinyllm/<set>` (read from
    `tinyllm_root`), or a folder written by `DatasetDict.save_to_disk` in the rationale schema (with `teachers`).
    """

    dataset_name: str = field(default="toy", metadata={"help": "toy, tinyllm/<set>, or a saved DatasetDict folder."})
    tinyllm_root: str | None = field(default=None, metadata={"help": "Folder of data in the TinyLLM layout."})
    teachers: list[str] | None = field(default=None, metadata={"help": "Teacher names of a saved dataset."})
    toy_rows: int = field(default=128, metadata={"help": "Rows of the toy set (3/4 train, 1/4 eval)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Use only the first N eval rows."})
    student_architecture: str = field(default="llama", metadata={"help": "From-scratch student: llama or t5."})
    purifier: str = field(
        default="similarity", metadata={"help": f"One of {PURIFIERS}, single_teacher:<name>, or none."}
    )
    router_name_or_path: str | None = field(default=None, metadata={"help": "Use this fitted router as is."})
    router_encoder: str | None = field(default=None, metadata={"help": "Sentence encoder of a new router."})
    router_epochs: int = field(default=30, metadata={"help": "Training epochs of a classifier/similarity router."})
    aggregator_model: str | None = field(default=None, metadata={"help": "Local aggregator LLM (aggregation)."})
    aggregator_endpoint: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL (aggregation)."})
    aggregator_endpoint_model: str = field(default="default", metadata={"help": "Model name at the endpoint."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a non-empty output_dir that is not an earlier purify output."}
    )


def load_data(args: PurifyArguments):
    """(train, eval, teacher names), validated."""
    if args.dataset_name == "toy":
        data = toy.toy_rationale_data(args.toy_rows, seed=0)
        cut = len(data) * 3 // 4
        train, test, teachers = data.select(range(cut)), data.select(range(cut, len(data))), list(toy.TOY_TEACHERS)
    elif args.dataset_name.startswith("tinyllm/"):
        if args.tinyllm_root is None:
            raise ValueError(f"dataset_name={args.dataset_name!r} needs tinyllm_root: the folder holding the sets.")
        name = args.dataset_name.split("/", 1)[1]
        (train, report), (test, _) = (
            load_tinyllm(args.tinyllm_root, name, split)
            for split in (args.dataset_train_split, args.dataset_test_split)
        )
        teachers = report.teachers
    else:
        if not args.teachers:
            raise ValueError(f"dataset_name={args.dataset_name!r} is a saved dataset: name its teachers too.")
        data = load_from_disk(args.dataset_name)
        train, test, teachers = data[args.dataset_train_split], data[args.dataset_test_split], args.teachers
    if args.max_train_rows:
        train = train.select(range(min(args.max_train_rows, len(train))))
    if args.max_eval_rows:
        test = test.select(range(min(args.max_eval_rows, len(test))))
    validate_rationale_data(train, teachers)
    validate_rationale_data(test, teachers)
    return train, test, teachers


def build_student(args: PurifyArguments, model_args: ModelConfig, train):
    """(student, tokenizer): from `model_name_or_path`, else a tiny one built from a config on the data's words."""
    if model_args.model_name_or_path:
        kwargs = {
            "revision": model_args.model_revision,
            "dtype": model_args.dtype,
            "quantization_config": get_quantization_config(model_args),
        }
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        return auto.from_pretrained(model_args.model_name_or_path, **kwargs), tokenizer
    if args.student_architecture not in ("llama", "t5"):
        raise ValueError(f"student_architecture={args.student_architecture!r}; expected 'llama' or 't5'.")
    tokenizer = toy.word_tokenizer(toy.rationale_texts(train), append_eos=args.student_architecture == "t5")
    build = toy.tiny_t5 if args.student_architecture == "t5" else toy.tiny_llama_student
    return build(len(tokenizer)), tokenizer


def build_purifier(args: PurifyArguments, teachers, train, tokenizer, seed: int):
    """(purifier or None, RL selector or None)."""
    name = args.purifier
    if name == "none":
        return None, None
    if name.startswith("single_teacher:"):
        return SingleTeacher(teachers, name.split(":", 1)[1]), None
    if name == "aggregation":
        if args.aggregator_endpoint:
            endpoint = {"endpoint": args.aggregator_endpoint, "endpoint_model": args.aggregator_endpoint_model}
            return AggregationPurifier(teachers, **endpoint), None
        if not args.aggregator_model:
            raise ValueError("purifier='aggregation' needs aggregator_model or aggregator_endpoint.")
        model = AutoModelForCausalLM.from_pretrained(args.aggregator_model)
        return AggregationPurifier(teachers, model, AutoTokenizer.from_pretrained(args.aggregator_model)), None
    if name not in ROUTERS:
        raise ValueError(f"purifier={name!r}; expected one of {PURIFIERS}, 'single_teacher:<name>' or 'none'.")
    if args.router_name_or_path:
        router = load_router(args.router_name_or_path)
        if router.method != name:
            raise ValueError(f"router_name_or_path holds a {router.method} router, but purifier={name!r}.")
    else:
        encoder = SentenceEncoder.from_pretrained(args.router_encoder) if args.router_encoder else None
        router = ROUTERS[name](teachers, encoder or toy.tiny_sentence_encoder(tokenizer))
        if name != "reinforce":
            fit_kwargs = {} if name == "plackett_luce" else {"epochs": args.router_epochs, "seed": seed}
            router.fit(train, **fit_kwargs)
    return (None, router) if name == "reinforce" else (router, None)


def seq2seq_config(training_args: PurifiedDistillConfig) -> PurifiedSeq2SeqDistillConfig:
    """The same settings for an encoder-decoder student (the fields both configs have)."""
    names = {f.name for f in dataclasses.fields(PurifiedSeq2SeqDistillConfig) if f.init}
    shared = {f.name for f in dataclasses.fields(training_args) if f.init} & names
    return PurifiedSeq2SeqDistillConfig(**{name: getattr(training_args, name) for name in shared})


def main(script_args: PurifyArguments, training_args: PurifiedDistillConfig, model_args: ModelConfig) -> dict:
    # offline installs named in a recipe (hf_know.local_models) become their folders; other names are Hub ids or paths
    model_args.model_name_or_path = resolve(model_args.model_name_or_path)
    script_args.router_encoder = resolve(script_args.router_encoder)
    script_args.aggregator_model = resolve(script_args.aggregator_model)
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    if push and not hub_model_id:
        raise ValueError("push_to_hub is set but hub_model_id is not: name the Hub repo to push to.")
    inputs = [
        script_args.tinyllm_root,
        script_args.dataset_name,
        model_args.model_name_or_path,
        script_args.router_name_or_path,
        script_args.router_encoder,
        script_args.aggregator_model,
    ]
    output = dict(kind=OUTPUT_KIND, inputs=inputs, overwrite=script_args.overwrite_output_dir)
    check_output_dir(training_args.output_dir, **output)  # before any work; written atomically at the end
    training_args = dataclasses.replace(training_args, push_to_hub=False)  # pushed once, with the router link
    set_seed(training_args.seed)
    train, test, teachers = load_data(script_args)
    model, tokenizer = build_student(script_args, model_args, train)
    purifier, selector = build_purifier(script_args, teachers, train, tokenizer, training_args.seed)
    common = dict(teachers=teachers, purifier=purifier, selector=selector)
    peft_config = get_peft_config(model_args)
    if model.config.is_encoder_decoder:
        model = get_peft_model(model, peft_config) if peft_config is not None else model
        args = seq2seq_config(training_args)
        trainer = PurifiedSeq2SeqDistillTrainer(model, args, train, test, tokenizer, **common)
    else:
        trainer = PurifiedDistillTrainer(
            model, training_args, train, test, tokenizer, peft_config=peft_config, **common
        )
    claim_output_dir(training_args.output_dir, **output)  # what the Trainer writes there is this run's
    result = trainer.train()
    metrics = {**trainer.evaluate(), "train_runtime": result.metrics["train_runtime"]}
    chosen = selector.purify(trainer.rationale_data) if selector else trainer.rationale_data
    if "purified_teacher" in chosen.column_names:
        metrics["chosen_teachers"] = dict(Counter(chosen["purified_teacher"]))
    router = selector or (purifier if hasattr(purifier, "save_pretrained") else None)
    if trainer.is_world_process_zero():
        with atomic_output_dir(training_args.output_dir, **output) as tmp:
            trainer.save_model(str(tmp))
            if router is not None:
                router.save_pretrained(tmp / "router")
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        router_repo = f"{hub_model_id}-router" if push and router is not None else None
        trainer.hub_model_id = hub_model_id  # named in the card's quick start
        router_text = f"[{router_repo}](https://huggingface.co/{router_repo})" if router_repo else "`router/` here"
        write_model_card(trainer, script_args, training_args, router_text if router is not None else None)
        if push:
            if router_repo:
                router.push_to_hub(router_repo, token=training_args.hub_token)
            push_folder(training_args.output_dir, hub_model_id, token=training_args.hub_token)
    trainer.accelerator.wait_for_everyone()
    return metrics


def write_model_card(trainer, script_args: PurifyArguments, training_args, router: str | None) -> None:
    """The trainer's model card (trl's for causal students: tags and the paper's citation), naming the purifier and
    linking the router (`router`: where it is, in Markdown; None if the purifier has none)."""
    output = Path(training_args.output_dir)
    name = (training_args.hub_model_id or output.name).split("/")[-1]
    tags = ["hf-know", "knowledge-purification", f"purifier-{script_args.purifier.split(':')[0]}"]
    trainer.create_model_card(model_name=name, tags=tags)
    card = ModelCard.load(output / "README.md")
    with_router = f" (router: {router})" if router else ""
    card.text += (
        f"\n## Knowledge purification\n\nRationales of the teachers {', '.join(trainer.teachers)} were purified with "
        f"`{script_args.purifier}`{with_router} and distilled with `distill_mode={training_args.distill_mode}`, "
        f"λ = {training_args.rationale_weight}, by [hf-know](https://github.com/hf-know/hf-know) "
        "(knowledge purification, [arXiv 2602.01064](https://arxiv.org/abs/2602.01064)).\n"
    )
    card.save(output / "README.md")


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((PurifyArguments, PurifiedDistillConfig, ModelConfig), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Parse `argv` (default: the command line) and run `main`."""
    return main(*parse(make_parser(prog), argv))
