"""`PurifiedDistillTrainer`: distilling step-by-step on purified rationales (purification.md §1, §7).

Each row gives an answer task (input `answer_prefix` + question and choices, target the gold option's text) and,
unless `distill_mode="labels_only"`, rationale tasks (target a rationale): the purified one, or one per teacher
(TinyLLM's all-teachers baseline), or the one an RL `selector` samples for the row. All of a batch's tasks go
through the student in **one** forward pass (padded together), so the cost of a step grows with the number of
rationale tasks: that is where purification saves training time. Students may be encoder-decoder (T5-like) or
decoder-only models; for the latter the target follows the input and only target tokens are scored.
"""

from __future__ import annotations

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from .config import PurifiedDistillConfig
from .data import format_question, validate_rationale_data
from .metrics import exact_match_accuracy, predict_answers
from .purifier import Purifier
from .purifiers.reinforce import ReinforceSelector

IGNORE_INDEX = -100


def _pad(sequences: list[list[int]], value: int, length: int | None = None) -> torch.Tensor:
    length = max([len(s) for s in sequences] + [1]) if length is None else length
    return torch.tensor([s + [value] * (length - len(s)) for s in sequences], dtype=torch.long)


class DistillCollator:
    """Pads the answer task to [B, L] and the rationale tasks to [tasks, B, L]; masks come from the lengths."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            "answer_input_ids": _pad([f["answer_input_ids"] for f in features], self.pad_token_id),
            "answer_labels": _pad([f["answer_labels"] for f in features], IGNORE_INDEX),
            "row_index": torch.tensor([f["row_index"] for f in features]),
        }
        batch["answer_attention_mask"] = _pad([[1] * len(f["answer_input_ids"]) for f in features], 0)
        tasks = len(features[0]["rationale_input_ids"])
        if tasks:
            inputs = [[f["rationale_input_ids"][t] for f in features] for t in range(tasks)]
            labels = [[f["rationale_labels"][t] for f in features] for t in range(tasks)]
            width = max(len(s) for task in inputs for s in task)
            target = max([len(s) for task in labels for s in task] + [1])
            batch["rationale_input_ids"] = torch.stack([_pad(t, self.pad_token_id, width) for t in inputs])
            batch["rationale_attention_mask"] = torch.stack([_pad([[1] * len(s) for s in t], 0, width) for t in inputs])
            batch["rationale_labels"] = torch.stack([_pad(t, IGNORE_INDEX, target) for t in labels])
            batch["rationale_teacher"] = torch.tensor([f["rationale_teacher"] for f in features])
        return batch


def _cat_padded(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(t.shape[-1] for t in tensors)
    return torch.cat([nn.functional.pad(t, (0, width - t.shape[-1]), value=value) for t in tensors])


class PurifiedDistillTrainer(Trainer):
    """A `transformers.Trainer` for multi-teacher rationale distillation.

    Args:
        model: the student, an encoder-decoder or a decoder-only LM.
        args: a `PurifiedDistillConfig`.
        train_dataset: rationale data (`hf_know.purification.data` schema). In `"purified"` mode it either has a
            `rationale` column already or `purifier` makes one.
        eval_dataset: rows with `question`, `choices`, `answer`; `evaluate()` reports exact-match `accuracy`.
        processing_class: the student's tokenizer (required).
        teachers: teacher names, in the order of `rationales` (default: the purifier's or selector's).
        purifier: any `Purifier`, applied to `train_dataset` when it has no `rationale` column.
        selector: a `ReinforceSelector` trained jointly with the student (REINFORCE, reward -(L_PR + L_DL)).
        teacher_models: name -> (model, tokenizer) for the optional token-level distillation (`kd_weight > 0`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        args: PurifiedDistillConfig,
        train_dataset: Dataset,
        eval_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        teachers: list[str] | None = None,
        purifier: Purifier | None = None,
        selector: ReinforceSelector | None = None,
        teacher_models: dict[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]] | None = None,
        **kwargs,
    ):
        if not isinstance(args, PurifiedDistillConfig):
            raise TypeError(f"args must be a PurifiedDistillConfig, got {type(args).__name__}.")
        if processing_class is None:
            raise ValueError("PurifiedDistillTrainer needs the student's tokenizer as processing_class.")
        teachers = teachers or getattr(selector or purifier, "teachers", None)
        self.data_report = validate_rationale_data(train_dataset, teachers)
        self.teachers = self.data_report.teachers
        for component in (purifier, selector):
            if getattr(component, "teachers", self.teachers) != self.teachers:
                raise ValueError(f"{type(component).__name__} routes among {component.teachers}, but the data has "
                                 f"teachers {self.teachers}.")  # fmt: skip
        if selector is not None and args.distill_mode != "purified":
            raise ValueError(f"An RL selector purifies while training: use distill_mode='purified', not "
                             f"{args.distill_mode!r}.")  # fmt: skip
        if args.distill_mode == "purified" and selector is None and "rationale" not in train_dataset.column_names:
            if purifier is None:
                raise ValueError("distill_mode='purified' needs a 'rationale' column in train_dataset or a purifier.")
            train_dataset = purifier.purify(train_dataset)
        self.rationale_data, self.selector = train_dataset, selector
        self.is_encoder_decoder = bool(model.config.is_encoder_decoder)
        self.decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        self.teacher_models = self._check_teacher_models(teacher_models or {}, args, processing_class)
        encoded = train_dataset.map(
            self._encode_row,
            with_indices=True,
            remove_columns=train_dataset.column_names,
            fn_kwargs={"args": args, "tokenizer": processing_class},
            desc="tokenize tasks",
        )
        kwargs.setdefault("data_collator", DistillCollator(processing_class.pad_token_id))
        super().__init__(model=model, args=args, train_dataset=encoded, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)  # fmt: skip
        # Our loss is a per-process mean of per-row means: the Trainer must divide it by the accumulation steps and
        # must not rescale it by token counts, which it would do for models that take loss kwargs.
        self.model_accepts_loss_kwargs = False
        self._parts = {"answer_loss": [], "rationale_loss": []}  # per-step task losses, averaged into each log
        if selector is not None:
            self.selector_states = selector.states(train_dataset)
            self.policy_optimizer = torch.optim.Adam(selector.policy.parameters(), lr=args.policy_learning_rate)
            self.policy_generator = torch.Generator().manual_seed(args.seed)

    # ---- data -------------------------------------------------------------------------------------------------
    def _check_teacher_models(self, teacher_models, args, tokenizer) -> dict:
        if args.kd_weight > 0 and not teacher_models:
            raise ValueError("kd_weight > 0 needs teacher_models (name -> (model, tokenizer)) to distil logits from.")
        for name, (teacher, teacher_tokenizer) in teacher_models.items():
            if name not in self.teachers:
                raise ValueError(f"teacher_models names {name!r}, not one of the data's teachers {self.teachers}.")
            if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
                raise ValueError(f"Teacher {name!r}'s tokenizer differs from the student's: token-level distillation "
                                 "needs the same vocabulary.")  # fmt: skip
            if bool(teacher.config.is_encoder_decoder) != self.is_encoder_decoder:
                raise ValueError(f"Teacher {name!r} and the student must both be encoder-decoder or both decoder-only.")
            teacher.eval().requires_grad_(False).to(args.device)
        return {self.teachers.index(name): model for name, (model, _) in teacher_models.items()}

    def _encode(self, tokenizer, source: str, target: str, max_source: int, length: int) -> tuple[list, list]:
        """(input ids, labels) of one task; no labels for an empty target (the task is skipped on that row)."""
        source_ids = tokenizer(source, truncation=True, max_length=max_source)["input_ids"]
        if not target.strip():
            return source_ids, []
        if self.is_encoder_decoder:
            labels = tokenizer(target, truncation=True, max_length=length + 1)["input_ids"]
            if labels and labels[0] == self.decoder_start_token_id:  # e.g. BERT's [CLS] as decoder start
                labels = labels[1:]
            return source_ids, labels[:length]
        target_ids = tokenizer(target, add_special_tokens=False, truncation=True, max_length=length - 1)["input_ids"]
        target_ids = [*target_ids, tokenizer.eos_token_id]
        return source_ids + target_ids, [IGNORE_INDEX] * len(source_ids) + target_ids

    def _encode_row(self, row: dict, index: int, args: PurifiedDistillConfig, tokenizer) -> dict:
        question = format_question(row["question"], row["choices"])
        answer_ids, answer_labels = self._encode(
            tokenizer, args.answer_prefix + question, row["answer"], args.max_source_length, args.max_answer_length
        )
        if args.distill_mode == "labels_only":
            tasks, teacher = [], -1
        elif args.distill_mode == "all_teachers":
            prefixes = [args.teacher_rationale_prefix.format(teacher=t) for t in self.teachers]
            tasks, teacher = list(zip(prefixes, row["rationales"], strict=True)), -1
        elif self.selector is not None:  # every teacher's rationale; the selector picks one per step
            tasks, teacher = [(args.rationale_prefix, r) for r in row["rationales"]], -1
        else:
            chosen = row.get("purified_teacher", "")
            tasks = [(args.rationale_prefix, row["rationale"])]
            teacher = self.teachers.index(chosen) if chosen in self.teachers else -1
        encoded = [
            self._encode(tokenizer, prefix + question, rationale, args.max_source_length, args.max_rationale_length)
            for prefix, rationale in tasks
        ]
        return {
            "answer_input_ids": answer_ids,
            "answer_labels": answer_labels,
            "rationale_input_ids": [ids for ids, _ in encoded],
            "rationale_labels": [labels for _, labels in encoded],
            "rationale_teacher": teacher,
            "row_index": index,
        }

    # ---- loss -------------------------------------------------------------------------------------------------
    def _token_logits(self, model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) aligned position by position, for either kind of student."""
        if self.is_encoder_decoder:
            # a parameter-free shift of the labels; a DDP/FSDP wrapper does not expose it, the inner model does
            decoder_input_ids = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(
                labels=labels
            )
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
            ).logits
            return logits, labels
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, :-1], labels[:, 1:]

    def _rationale_rows(self, inputs: dict) -> tuple[list, torch.Tensor | None]:
        """The rationale (input, mask, labels, teacher) rows of this step, and the RL policy's log-probabilities."""
        if "rationale_input_ids" not in inputs:
            return [], None
        ids, mask, labels = (
            inputs["rationale_input_ids"],
            inputs["rationale_attention_mask"],
            inputs["rationale_labels"],
        )
        available = (labels != IGNORE_INDEX).any(-1)  # [tasks, B]
        if self.selector is not None:
            states = self.selector_states[inputs["row_index"].cpu()]
            choice, log_prob = self.selector.sample(states, available.T.cpu(), self.policy_generator)
            rows = torch.arange(ids.shape[1])
            choice = choice.to(ids.device)
            picked = (ids[choice, rows], mask[choice, rows], labels[choice, rows], choice)
            return [tuple(t[available[choice, rows]] for t in picked)], log_prob
        teacher = inputs["rationale_teacher"]
        rows = []
        for task in range(ids.shape[0]):
            keep = available[task]
            task_teacher = teacher if ids.shape[0] == 1 else torch.full_like(teacher, task)
            rows.append((ids[task][keep], mask[task][keep], labels[task][keep], task_teacher[keep]))
        return rows, None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args: PurifiedDistillConfig = self.args
        tasks, log_prob = self._rationale_rows(inputs)
        pad = self.processing_class.pad_token_id
        input_ids = _cat_padded([inputs["answer_input_ids"], *[t[0] for t in tasks]], pad)
        attention_mask = _cat_padded([inputs["answer_attention_mask"], *[t[1] for t in tasks]], 0)
        labels = _cat_padded([inputs["answer_labels"], *[t[2] for t in tasks]], IGNORE_INDEX)
        logits, targets = self._token_logits(model, input_ids, attention_mask, labels)
        token_nll = nn.functional.cross_entropy(
            logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        counts = (targets != IGNORE_INDEX).sum(-1)
        nll = token_nll.sum(-1) / counts.clamp(min=1)  # per-row mean token NLL
        sizes = [len(inputs["answer_input_ids"])] + [len(t[0]) for t in tasks]
        answer_nll, *rationale_nll = nll.split(sizes)
        loss = answer_nll.mean()
        for part in rationale_nll:
            if len(part):
                loss = loss + args.rationale_weight * part.mean()
        if args.kd_weight > 0 and tasks:
            rest = slice(sizes[0], None)
            teachers = torch.cat([t[3] for t in tasks])
            kd = self._token_kd(
                logits[rest], targets[rest], input_ids[rest], attention_mask[rest], labels[rest], teachers
            )
            loss = loss + args.kd_weight * kd
        if self.selector is not None and model.training:
            self._policy_step(answer_nll.detach(), rationale_nll[0].detach(), log_prob, inputs)
        self._log_parts(answer_nll, rationale_nll)
        return loss

    def _token_kd(self, logits, targets, input_ids, attention_mask, labels, teacher) -> torch.Tensor:
        """KL(teacher ‖ student) per target token, averaged over the rows whose teacher model is given."""
        total, rows = logits.new_zeros(()), 0
        temperature = self.args.kd_temperature
        for index, teacher_model in self.teacher_models.items():
            keep = teacher == index
            if not keep.any():
                continue
            with torch.no_grad():
                teacher_logits, _ = self._token_logits(
                    teacher_model, input_ids[keep], attention_mask[keep], labels[keep]
                )
            valid = targets[keep] != IGNORE_INDEX
            student = (logits[keep][valid].float() / temperature).log_softmax(-1)
            reference = (teacher_logits[valid].float() / temperature).log_softmax(-1)
            per_token = nn.functional.kl_div(student, reference, log_target=True, reduction="none").sum(-1)
            total = total + per_token.mean() * temperature**2 * int(keep.sum())
            rows += int(keep.sum())
        return total / max(rows, 1)

    def _policy_step(self, answer_nll, rationale_nll, log_prob, inputs) -> None:
        """One REINFORCE update of the selector: reward -(L_PR + L_DL) per row, baseline the batch mean."""
        labels = inputs["rationale_labels"]
        available = (labels != IGNORE_INDEX).any(-1).any(0).cpu()
        reward = -answer_nll.cpu()
        reward[available] -= rationale_nll.cpu()
        advantage = (reward - reward[available].mean()) * available
        self.policy_optimizer.zero_grad()
        (-(advantage * log_prob).sum() / available.sum().clamp(min=1)).backward()
        if self.accelerator.num_processes > 1:  # the policy lives on CPU; keep it identical on every process
            for parameter in self.selector.policy.parameters():
                mean = self.accelerator.reduce(parameter.grad.to(self.accelerator.device), reduction="mean")
                parameter.grad.copy_(mean.cpu())
        self.policy_optimizer.step()

    def _log_parts(self, answer_nll, rationale_nll) -> None:
        self._parts["answer_loss"].append(float(answer_nll.mean()))
        parts = [float(p.mean()) for p in rationale_nll if len(p)]
        if parts:
            self._parts["rationale_loss"].append(sum(parts) / len(parts))

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the task losses since the last one
            for name, values in self._parts.items():
                if values:
                    logs[name] = round(sum(values) / len(values), 4)
            self._parts = {name: [] for name in self._parts}
        super().log(logs, *args, **kwargs)

    # ---- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, eval_dataset: Dataset | None = None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Exact-match answer accuracy of generated answers; each process generates a shard, results gathered."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs an eval_dataset (rows with question, choices, answer).")
        model = self.accelerator.unwrap_model(self.model)
        with self.accelerator.split_between_processes(list(range(len(dataset)))) as shard:
            predictions = predict_answers(model, self.processing_class, dataset.select(shard), self.args.answer_prefix,
                                          self.args.generation_max_new_tokens, self.args.max_source_length,
                                          self.args.per_device_eval_batch_size)  # fmt: skip
        if self.accelerator.num_processes > 1:  # shards are contiguous and gathered in process order
            predictions = [p for part in gather_object([predictions]) for p in part]
        metrics = {f"{metric_key_prefix}_accuracy": exact_match_accuracy(predictions, dataset["answer"])}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
