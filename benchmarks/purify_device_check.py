"""The purified-distillation trainers on an accelerator: does every path the CPU tests cover also run, and compute
the documented objective, under CUDA and bf16 mixed precision? A check, not an accuracy benchmark.

    python benchmarks/purify_device_check.py --device cuda     # writes benchmarks/results/purify_device_check.json

On the synthetic two-teacher set (`hf_know.purification.toy`), for a tiny causal student (full, LoRA, padding-free,
RL selector) and a tiny T5 (`PurifiedSeq2SeqDistillTrainer`): the weighted loss of one batch against a reference
computed from the model's own logits, then training, with eval loss, answer accuracy and wall time before and after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import trl
from common import machine, versions
from peft import LoraConfig
from torch import nn

from hf_know.purification import (
    PurifiedDistillConfig,
    PurifiedDistillTrainer,
    PurifiedSeq2SeqDistillConfig,
    PurifiedSeq2SeqDistillTrainer,
    ReinforceSelector,
    SingleTeacher,
    toy,
)
from hf_know.purification.distillation import RATIONALE

RESULTS = Path(__file__).resolve().parent / "results"
TEACHERS = list(toy.TOY_TEACHERS)


def reference_loss(trainer, batch: dict) -> float:
    """Σ_t w_t · NLL_t / (completion tokens) from the model's own logits (w: 1 for answers, λ for rationales)."""
    model = trainer.model
    batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
            logits, labels, index = model(**inputs).logits, batch["labels"], batch["example_index"]
        else:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
            logits = model(**inputs).logits[:, :-1]
            labels, index = batch["labels"][:, 1:], batch["example_index"][:, 1:]
        nll = nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        tasks = batch["example_task"][index.clamp(min=0)]
        weights = torch.where(tasks == RATIONALE, trainer.args.rationale_weight, 1.0)
        mask = labels != -100
        return float((nll * weights * mask).sum() / mask.sum())


def run_case(name: str, student: str, device: str, bf16: bool, **options) -> dict:
    data = toy.toy_rationale_data(128)
    train, test = data.select(range(96)), data.select(range(96, 128))
    tokenizer = toy.word_tokenizer(toy.rationale_texts(data), append_eos=student == "t5")
    torch.manual_seed(0)
    model = toy.tiny_t5(len(tokenizer), d_model=64) if student == "t5" else toy.tiny_llama_student(len(tokenizer), 64)
    config_options = {key: options.pop(key) for key in ("padding_free", "max_length") if key in options}
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(
            output_dir=tmp,
            per_device_train_batch_size=32,
            learning_rate=3e-3,
            num_train_epochs=20,
            rationale_weight=0.5,
            disable_tqdm=True,
            seed=0,
            bf16=bf16,
            use_cpu=device == "cpu",
            logging_steps=1000,
        )
        if student == "t5":
            trainer = PurifiedSeq2SeqDistillTrainer(
                model, PurifiedSeq2SeqDistillConfig(**common), train, test, tokenizer, **options
            )
        else:
            trainer = PurifiedDistillTrainer(
                model, PurifiedDistillConfig(**common, **config_options), train, test, tokenizer, **options
            )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(32)])
        trainer.model.eval()
        with torch.no_grad():
            on_device = {k: v.to(trainer.model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = float(trainer.compute_loss(trainer.model, dict(on_device)))
        expected = reference_loss(trainer, dict(batch))
        before = trainer.evaluate()
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        after = trainer.evaluate()
    return {
        "case": name,
        "device": str(trainer.model.device),
        "bf16": bf16,
        "batch_loss": loss,
        "reference_loss": expected,
        "loss_matches_reference": abs(loss - expected) <= 1e-4 * max(1.0, abs(expected)),
        "eval_loss_before": before["eval_loss"],
        "eval_loss_after": after["eval_loss"],
        "answer_accuracy_before": before["eval_answer_accuracy"],
        "answer_accuracy_after": after["eval_answer_accuracy"],
        "train_seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--output", type=Path, default=RESULTS / "purify_device_check.json")
    args = parser.parse_args()
    bf16 = args.device == "cuda"
    encoder_tokenizer = toy.word_tokenizer(toy.rationale_texts(toy.toy_rationale_data(128)))
    adder = SingleTeacher(TEACHERS, "adder")
    cases = [
        run_case("causal, full", "llama", args.device, bf16, purifier=adder),
        run_case(
            "causal, LoRA r=8",
            "llama",
            args.device,
            bf16,
            purifier=adder,
            peft_config=LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        ),
        run_case(
            "causal, padding-free", "llama", args.device, bf16, purifier=adder, padding_free=True, max_length=None
        ),
        run_case(
            "causal, RL selector",
            "llama",
            args.device,
            bf16,
            selector=ReinforceSelector(TEACHERS, toy.tiny_sentence_encoder(encoder_tokenizer)),
        ),
        run_case("T5, full", "t5", args.device, bf16, purifier=adder),
    ]
    result = {"machine": machine(args.device), "versions": {**versions(), "trl": trl.__version__}, "cases": cases}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
