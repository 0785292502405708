"""PurifiedDistillTrainer (a trl SFTTrainer) and its encoder-decoder sibling: the objective, training, the eval loop,
predict, LoRA and padding-free students, the RL selector, the model card, and refused setups."""

import pytest
import torch
import trl
from peft import LoraConfig, PeftModel
from torch import nn

from hf_know.purification import (
    PurifiedDistillConfig,
    PurifiedDistillTrainer,
    PurifiedSeq2SeqDistillConfig,
    PurifiedSeq2SeqDistillTrainer,
    ReinforceSelector,
    SingleTeacher,
    exact_match_accuracy,
    predict_answers,
)
from hf_know.purification.distillation import MUTED, RATIONALE
from hf_know.purification.toy import (
    TOY_TEACHERS,
    rationale_texts,
    tiny_llama_student,
    tiny_sentence_encoder,
    tiny_t5,
    toy_rationale_data,
    word_tokenizer,
)

TEACHERS = list(TOY_TEACHERS)


@pytest.fixture(scope="module")
def toy():
    data = toy_rationale_data(128)
    return data.select(range(96)), data.select(range(96, 128))


def causal(data):
    tokenizer = word_tokenizer(rationale_texts(data), append_eos=False)
    torch.manual_seed(0)
    return tiny_llama_student(len(tokenizer)), tokenizer


def seq2seq(data, d_model=32):
    tokenizer = word_tokenizer(rationale_texts(data))
    torch.manual_seed(0)
    return tiny_t5(len(tokenizer), d_model=d_model), tokenizer


def config(tmp_path, seq2seq_student=False, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        disable_tqdm=True,
        num_train_epochs=1,
        seed=0,
    )
    cls = PurifiedSeq2SeqDistillConfig if seq2seq_student else PurifiedDistillConfig
    return cls(**{**defaults, **kwargs})


def trainer_for(student, tmp_path, train, test=None, **kwargs):
    model, tokenizer = causal(train) if student == "llama" else seq2seq(train)
    options = {
        key: kwargs.pop(key)
        for key in ("purifier", "selector", "teachers", "peft_config", "compute_metrics")
        if key in kwargs
    }
    options.setdefault("purifier", SingleTeacher(TEACHERS, "adder"))
    if student == "llama":
        return PurifiedDistillTrainer(model, config(tmp_path, **kwargs), train, test, tokenizer, **options)
    return PurifiedSeq2SeqDistillTrainer(model, config(tmp_path, True, **kwargs), train, test, tokenizer, **options)


def test_the_causal_trainer_is_trl_sft():
    assert issubclass(PurifiedDistillTrainer, trl.SFTTrainer)
    assert issubclass(PurifiedDistillConfig, trl.SFTConfig)


def reference_loss(trainer, batch) -> torch.Tensor:
    """Σ_t w_t · NLL_t / (completion tokens), from the model's own logits, w = 1 for answer tokens and λ for
    rationale tokens (each example's task read from the dataset, not from the collator's weights)."""
    model = trainer.model
    causal_student = not model.config.is_encoder_decoder
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
    if causal_student:
        logits = model(**inputs, position_ids=batch.get("position_ids")).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        index = batch["example_index"][:, 1:]
    else:
        logits, labels, index = model(**inputs, labels=batch["labels"]).logits, batch["labels"], batch["example_index"]
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    tasks = batch["example_task"][index.clamp(min=0)]
    weights = torch.where(tasks == RATIONALE, trainer.args.rationale_weight, 1.0)
    mask = labels != -100
    return (nll * weights * mask).sum() / mask.sum()


@pytest.mark.parametrize("student", ["llama", "t5"])
@pytest.mark.parametrize("mode", ["purified", "all_teachers", "labels_only"])
def test_the_loss_weights_rationale_tokens_by_lambda(toy, tmp_path, student, mode):
    train, _ = toy
    rows = train.select(range(4))
    trainer = trainer_for(student, tmp_path, rows, distill_mode=mode, rationale_weight=0.25)
    tasks = trainer.train_dataset["task"]
    present = [[bool(r.strip()) for r in row] for row in rows["rationales"]]  # a missing rationale is skipped
    rationales = {"purified": sum(row[0] for row in present), "all_teachers": sum(map(sum, present))}.get(mode, 0)
    assert tasks.count(RATIONALE) == rationales and len(tasks) == 4 + rationales
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(tasks))])
    trainer.model.eval()
    with torch.no_grad():
        expected = reference_loss(trainer, dict(batch))
        loss = trainer.compute_loss(trainer.model, dict(batch))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    if mode != "labels_only":  # λ matters: the unweighted loss differs
        assert loss.item() != pytest.approx(reference_loss_unweighted(trainer, batch), rel=1e-3)


def reference_loss_unweighted(trainer, batch) -> float:
    rationale_weight, trainer.args.rationale_weight = trainer.args.rationale_weight, 1.0
    with torch.no_grad():
        value = reference_loss(trainer, dict(batch)).item()
    trainer.args.rationale_weight = rationale_weight
    return value


def test_padding_free_batches_give_the_padded_loss(toy, tmp_path):
    train, _ = toy
    rows = train.select(range(6))
    padded = trainer_for("llama", tmp_path, rows, rationale_weight=0.5)
    flat = trainer_for("llama", tmp_path, rows, rationale_weight=0.5, padding_free=True, max_length=None)
    examples = [padded.train_dataset[i] for i in range(len(padded.train_dataset))]
    batch_padded, batch_flat = padded.data_collator(examples), flat.data_collator(examples)
    assert batch_flat["input_ids"].shape[0] == 1 and "attention_mask" not in batch_flat
    flat.model.load_state_dict(padded.model.state_dict())
    with torch.no_grad():
        losses = [t.compute_loss(t.model.eval(), dict(b)) for t, b in ((padded, batch_padded), (flat, batch_flat))]
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-4)


def count_calls(metrics):
    calls = []

    def compute_metrics(prediction):
        calls.append(len(prediction.label_ids))
        return {"examples": float(len(prediction.label_ids))}

    return compute_metrics, calls


@pytest.mark.parametrize("student", ["llama", "t5"])
def test_students_learn_and_the_eval_loop_reports_loss_accuracy_and_metrics(toy, tmp_path, student):
    train, _ = toy
    rows = train.select(range(16))
    compute_metrics, calls = count_calls(None)
    trainer = trainer_for(
        student,
        tmp_path,
        rows,
        rows,
        num_train_epochs=100,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        compute_metrics=compute_metrics,
    )
    before = trainer.evaluate()
    assert {"eval_loss", "eval_answer_accuracy", "eval_examples"} <= set(before) and calls == [16]
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_answer_accuracy"] >= 0.75 > before["eval_answer_accuracy"]  # memorises its 16 answers
    assert after["eval_loss"] < before["eval_loss"]
    prediction = trainer.predict(trainer.eval_dataset)
    assert prediction.metrics["test_answer_accuracy"] == after["eval_answer_accuracy"]
    assert prediction.predictions is not None and len(prediction.label_ids) == 16
    # exact match under teacher forcing is exact match of the greedy generation
    greedy = predict_answers(trainer.model, trainer.processing_class, rows)
    assert exact_match_accuracy(greedy, rows["answer"]) == after["eval_answer_accuracy"]


def test_a_lora_student_trains_and_saves_an_adapter(toy, tmp_path):
    train, test = toy
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = trainer_for("llama", tmp_path / "run", train, test, peft_config=peft_config, num_train_epochs=2)
    assert isinstance(trainer.model, PeftModel)
    frozen = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora" not in n}
    trainer.train()
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters() if "lora" not in n)
    trainer.save_model(str(tmp_path / "adapter"))
    base, _ = causal(train)
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    name = next(n for n in loaded.state_dict() if "lora_B" in n)
    assert torch.equal(loaded.state_dict()[name], trainer.model.state_dict()[name])


@pytest.mark.parametrize("student", ["llama", "t5"])
def test_the_rl_selector_trains_with_the_student_and_drops_unchosen_rationales(toy, tmp_path, student):
    train, _ = toy
    encoder = tiny_sentence_encoder(word_tokenizer(rationale_texts(train)))
    selector = ReinforceSelector(TEACHERS, encoder)
    trainer = trainer_for(student, tmp_path, train, selector=selector, purifier=None, num_train_epochs=2)
    examples = [trainer.train_dataset[i] for i in range(40)]
    batch = trainer.data_collator(examples)
    rationale_rows = batch["example_row"][batch["example_task"] == RATIONALE].tolist()
    assert rationale_rows and len(rationale_rows) == len(set(rationale_rows))  # one chosen rationale per question
    # a batch of unchosen rationales only: one muted example (no task, weight 0) instead of a batch that cannot exist
    unchosen = [e for e in examples if e["task"] == RATIONALE]
    step = trainer.selector_step
    step.keep, sample = (lambda batch: [False] * len(batch)), step.keep
    muted = trainer.data_collator(unchosen)
    step.keep = sample
    assert muted["example_task"].tolist() == [MUTED] and not muted["loss_weights"].any()
    assert trainer.compute_loss(trainer.model, muted).item() == 0.0
    trainer.train()
    assert selector.policy.weight.abs().sum() > 0  # REINFORCE moved the zero-initialised policy
    assert set(selector.purify(train)["purified_teacher"]) <= set(TEACHERS)


def test_the_model_card_has_the_tags_and_the_citation(toy, tmp_path):
    train, _ = toy
    trainer = trainer_for("llama", tmp_path, train.select(range(8)))
    trainer.create_model_card(model_name="student")
    card = (tmp_path / "README.md").read_text()
    for tag in ("trl", "sft", "hf-know", "knowledge-purification"):
        assert f"- {tag}\n" in card
    assert "arXiv:2602.01064" in card and "Knowledge Purification in Multi-Teacher" in card


def test_trainers_refuse_bad_setups(toy, tmp_path):
    train, _ = toy
    model, tokenizer = causal(train)
    with pytest.raises(ValueError, match="needs a 'rationale' column in train_dataset or a purifier"):
        PurifiedDistillTrainer(model, config(tmp_path), train, processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"routes among \['a', 'b'\], but the data has teachers"):
        PurifiedDistillTrainer(
            model,
            config(tmp_path),
            train,
            processing_class=tokenizer,
            teachers=TEACHERS,
            purifier=SingleTeacher(["a", "b"], "a"),
        )
    with pytest.raises(ValueError, match="distill_mode='typo'"):
        config(tmp_path, distill_mode="typo")
    with pytest.raises(ValueError, match="packed sequences mix tasks"):
        config(tmp_path, packing=True, rationale_weight=0.5)
    bad = train.select(range(4)).map(lambda r: {"answer": "42!"})
    with pytest.raises(ValueError, match=r"row 0 \(id 'toy-0'\): the gold answer '42!' is not among its choices"):
        PurifiedDistillTrainer(
            model,
            config(tmp_path),
            bad,
            processing_class=tokenizer,
            teachers=TEACHERS,
            purifier=SingleTeacher(TEACHERS, "adder"),
        )
    with pytest.raises(ValueError, match=r"row 0 \(id 'toy-0'\)"):
        PurifiedDistillTrainer(
            model, config(tmp_path), train, bad, tokenizer, purifier=SingleTeacher(TEACHERS, "adder")
        )
    t5, t5_tokenizer = seq2seq(train)
    with pytest.raises(ValueError, match="encoder-decoder model: use PurifiedSeq2SeqDistillTrainer"):
        PurifiedDistillTrainer(t5, config(tmp_path), train, processing_class=t5_tokenizer)
    with pytest.raises(ValueError, match="decoder-only model: use PurifiedDistillTrainer"):
        PurifiedSeq2SeqDistillTrainer(model, config(tmp_path, True), train, processing_class=tokenizer)
    with pytest.raises(TypeError, match="args must be a PurifiedDistillConfig"):
        PurifiedDistillTrainer(model, config(tmp_path, True), train, processing_class=tokenizer)


def test_conversational_tasks_go_through_the_chat_template(toy, tmp_path):
    train, _ = toy
    model, tokenizer = causal(train)
    tokenizer.chat_template = (  # roles spelt with words of the toy vocabulary: "choices" (user), "answer" (assistant)
        "{% for m in messages %}{{ 'answer' if m['role'] == 'assistant' else 'choices' }} : {{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}</s>{% endif %}{% endfor %}{% if add_generation_prompt %}answer :{% endif %}"
    )
    args = config(tmp_path, conversational=True, rationale_weight=0.5)
    rows = train.select(range(4))
    trainer = PurifiedDistillTrainer(model, args, rows, rows, tokenizer, purifier=SingleTeacher(TEACHERS, "adder"))
    first = trainer.train_dataset[0]
    assert first["prompt"][0]["role"] == "user" and first["completion"][0]["role"] == "assistant"
    text = tokenizer.decode(first["input_ids"])
    assert text.startswith("choices : predict") and "answer : " in text and text.endswith("</s>")
    completion = [t for t, label in zip(first["input_ids"], first["labels"], strict=True) if label != -100]
    assert tokenizer.decode(completion) == f"{rows[0]['answer']} </s>"  # only the assistant's reply is trained
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    with torch.no_grad():
        trainer.model.eval()
        assert trainer.compute_loss(trainer.model, dict(batch)).item() == pytest.approx(
            reference_loss(trainer, dict(batch)).item(), rel=1e-5
        )
    assert "eval_answer_accuracy" in trainer.evaluate()
