"""Forgetting trajectories: sequential fine-tuning on nested, shrinking subsets (KNOW, arXiv 2508.05059, section 3).

Session 0 trains on the full dataset D0 (or takes the given model as Θ0); session k fine-tunes the previous
session's weights on D_k, the first `round(r^k |D0|)` examples of one fixed seeded shuffle, so D0 ⊃ D1 ⊃ ... Each
session ends with one standard checkpoint, a local folder `session-k`, and optionally a branch `session-k` of one Hub
repo, so the trajectory on the Hub is a repo id plus revisions. A checkpoint is what the model's own `save_pretrained`
writes (a `transformers` model's folder; a PEFT model's adapter, so the trajectory is one of adapters), or
`model.safetensors` for any other `nn.Module`.

The paper leaves the per-session epochs and learning rate open (arXiv 2508.05059). By default every session uses
the `TrainingArguments`' epochs and learning rate, so a session's cost is proportional to its subset and the whole
trajectory costs `(1 - r^S) / (1 - r)` times one full-data session, as the paper states; both can be set per session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from accelerate import PartialState
from huggingface_hub import HfApi
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import load_peft_weights
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.utils import logging

from ..hub import pull, push_folder
from ..io import atomic_output_dir, check_output_dir
from .checkpoints import SAFETENSORS_FILE

logger = logging.get_logger(__name__)

SESSION_FILE = "know_session.json"
SESSION_KIND = "know-session"
TRAJECTORY_FILE = "trajectory.json"
# The Trainer's scratch folder inside output_dir, removed when the trajectory is complete.
TRAINER_SCRATCH = ".hf-know-trainer"


def subset_sizes(num_examples: int, r: float, num_sessions: int) -> list[int]:
    """`round(r^k * num_examples)` for k = 0 .. num_sessions-1; every subset must hold at least one example."""
    if not 0 < r < 1:
        raise ValueError(f"r={r}: the subset ratio must lie strictly between 0 and 1.")
    if num_sessions < 2:
        raise ValueError(f"num_sessions={num_sessions}: a trajectory needs at least 2 sessions.")
    sizes = [round(r**k * num_examples) for k in range(num_sessions)]
    if sizes[-1] < 1 or len(set(sizes)) < num_sessions:
        raise ValueError(
            f"A dataset of {num_examples} examples is too small for {num_sessions} nested subsets at r={r} "
            f"(sizes {sizes}); expected strictly shrinking, non-empty subsets."
        )
    return sizes


def session_dir(output_dir: str | os.PathLike, session: int) -> Path:
    return Path(output_dir) / f"session-{session}"


def trajectory_checkpoints(output_dir: str | os.PathLike, num_sessions: int, hub_model_id: str | None = None):
    """The trajectory in the order `KnowPredictor.predict` takes it: smallest data first, full data (session 0) last.
    Local folders, or `repo_id@session-k` revisions when the sessions were pushed to `hub_model_id`."""
    order = range(num_sessions - 1, -1, -1)
    if hub_model_id:
        return [f"{hub_model_id}@session-{k}" for k in order]
    return [str(session_dir(output_dir, k)) for k in order]


def _per_session(values: Sequence[float] | None, default: float, num_sessions: int, name: str) -> list[float]:
    if values is None:
        return [default] * num_sessions
    if len(values) != num_sessions:
        raise ValueError(f"{name} has {len(values)} values; expected one per session ({num_sessions}).")
    return list(values)


def collect_trajectory(
    model: nn.Module,
    train_dataset,
    args: TrainingArguments,
    output_dir: str | os.PathLike,
    *,
    r: float = 0.5,
    num_sessions: int = 5,
    seed: int = 0,
    train_first_session: bool = True,
    session_epochs: Sequence[float] | None = None,
    session_learning_rates: Sequence[float] | None = None,
    hub_model_id: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
    **trainer_kwargs,
) -> list[str]:
    """Fine-tune `model` on nested shrinking subsets of `train_dataset` and save one checkpoint per session.

    Resumable: a session whose folder `output_dir/session-k` is complete (folders are written atomically), or whose
    branch exists on `hub_model_id`, is not trained again; the next session starts from its weights.

    Args:
        model: the model to train: a `transformers` model, a `PeftModel` (only its adapter is trained and saved) or
            any `nn.Module` the `Trainer` takes. Session 0 trains it on the full data unless
            `train_first_session=False`, in which case it is taken as the full-data model Θ0 as it is.
        train_dataset: a `datasets.Dataset` (D0).
        args: the `TrainingArguments` of every session; `output_dir` is replaced by a scratch folder.
        output_dir: where `session-k` folders and `trajectory.json` go.
        r: subset ratio, `|D_k| = round(r^k |D0|)`.
        num_sessions: S, the number of checkpoints (session 0 included).
        seed: seed of the one shuffle that all subsets are prefixes of.
        session_epochs / session_learning_rates: per-session overrides (one value per session).
        hub_model_id: also push session k to branch `session-k` of this Hub repo.
        overwrite: write into a non-empty `output_dir` that holds no trajectory (files there other than `session-k`
            folders are left alone); without it such a folder is refused.
        **trainer_kwargs: passed to every `Trainer` (`data_collator`, `processing_class`, `compute_metrics`...).

    Returns:
        the checkpoints, smallest data first (the order `KnowPredictor.predict` takes).
    """
    sizes = subset_sizes(len(train_dataset), r, num_sessions)
    epochs = _per_session(session_epochs, args.num_train_epochs, num_sessions, "session_epochs")
    learning_rates = _per_session(session_learning_rates, args.learning_rate, num_sessions, "session_learning_rates")
    output_dir = Path(output_dir)
    plan = {
        "r": r,
        "num_sessions": num_sessions,
        "seed": seed,
        "num_examples": len(train_dataset),
        "subset_sizes": sizes,
        "session_epochs": epochs,
        "session_learning_rates": learning_rates,
        "train_first_session": train_first_session,
    }
    _check_plan(output_dir, plan, overwrite)
    shuffled = train_dataset.shuffle(seed=seed)
    api = HfApi(token=token) if hub_model_id else None
    branches = _hub_branches(api, hub_model_id)
    resumed_from = None
    main_process = PartialState().is_main_process
    for session, size in enumerate(sizes):
        folder, branch = session_dir(output_dir, session), f"session-{session}"
        if not (folder / SESSION_FILE).is_file() and branch in branches:
            pull(hub_model_id, branch, folder, token=token)
        if (folder / SESSION_FILE).is_file():
            logger.info("Session %d already done (%s); skipping it.", session, folder)
            resumed_from = folder
        else:
            if resumed_from is not None:
                load_session(model, resumed_from)
                resumed_from = None
            record = {**plan, "session": session, "subset_size": size, "epochs": epochs[session]}
            record["learning_rate"] = learning_rates[session]
            if session > 0 or train_first_session:
                session_args = dataclasses.replace(
                    args,
                    output_dir=str(output_dir / TRAINER_SCRATCH),
                    num_train_epochs=epochs[session],
                    learning_rate=learning_rates[session],
                )
                logger.info(
                    "Session %d: %d examples, %s epochs, lr %s.",
                    session,
                    size,
                    epochs[session],
                    record["learning_rate"],
                )
                trainer = Trainer(
                    model=model, args=session_args, train_dataset=shuffled.select(range(size)), **trainer_kwargs
                )
                record["train_loss"] = trainer.train().training_loss
            if main_process:
                _save_session(model, folder, record, trainer_kwargs.get("processing_class"), overwrite)
            PartialState().wait_for_everyone()
        # Also pushes a session saved locally by a run that stopped before pushing it.
        if hub_model_id and branch not in branches and main_process:
            message = f"KNOW trajectory session {session} ({size} examples)"
            push_folder(folder, hub_model_id, revision=branch, token=token, commit_message=message)
    shutil.rmtree(output_dir / TRAINER_SCRATCH, ignore_errors=True)
    return trajectory_checkpoints(output_dir, num_sessions, hub_model_id)


def load_session(model: nn.Module, folder: str | os.PathLike) -> None:
    """Load the weights of a session checkpoint into `model` in place (the inverse of `_save_session`)."""
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_peft_weights(str(folder)), adapter_name=model.active_adapter)
    elif isinstance(model, PreTrainedModel):
        model.load_state_dict(type(model).from_pretrained(folder).state_dict())
    else:
        load_model(model, Path(folder) / SAFETENSORS_FILE)


def save_weights(model, folder: Path) -> None:
    """Write `model` as KNOW reads a checkpoint: `save_pretrained` for transformers and PEFT models (an adapter for
    the latter), `model.safetensors` for a plain module."""
    if isinstance(model, PreTrainedModel | PeftModel):
        model.save_pretrained(folder)
    else:
        save_model(model, str(Path(folder) / SAFETENSORS_FILE))


def _save_session(model, folder: Path, record: dict, processor, overwrite: bool) -> None:
    """One standard checkpoint folder (`save_weights`, processor) plus the session record, written atomically."""
    with atomic_output_dir(folder, SESSION_KIND, overwrite=overwrite) as tmp:
        save_weights(model, tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        (tmp / SESSION_FILE).write_text(json.dumps(record, indent=2))


def _check_plan(output_dir: Path, plan: dict, overwrite: bool) -> None:
    """Record the run's settings in `trajectory.json`; refuse to resume a run made with other settings, and refuse
    a non-empty folder holding no trajectory (unless `overwrite`)."""
    manifest = output_dir / TRAJECTORY_FILE
    if manifest.is_file():
        previous = json.loads(manifest.read_text())
        changed = sorted(key for key in plan if previous.get(key) != plan[key])
        if changed:
            raise ValueError(
                f"{output_dir} holds a trajectory made with other settings ({', '.join(changed)}: "
                f"{[previous.get(k) for k in changed]} there, {[plan[k] for k in changed]} now). Use another "
                "output_dir, or the same settings to resume."
            )
        return
    check_output_dir(output_dir, "know-trajectory", overwrite=overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plan, indent=2))
    tmp.replace(manifest)


def _hub_branches(api: HfApi | None, repo_id: str | None) -> set[str]:
    if api is None or not api.repo_exists(repo_id):
        return set()
    return {branch.name for branch in api.list_repo_refs(repo_id).branches}
