"""`KnowPredictor`: synthesise "knowledge-overflowed" weights from a forgetting trajectory of checkpoints.

    predictor = KnowPredictor.from_pretrained()  # the hyper-model shipped with hf-know
    predictor.predict(["run/session-4", ..., "run/session-0"], steps=3, output_dir="know-x8")
    model = AutoModel.from_pretrained("know-x8")

Checkpoints are read tensor by tensor, a chunk of elements at a time, and the result is streamed into a standard
(sharded) safetensors folder, so memory does not grow with model size. A trajectory of PEFT adapters (a PEFT model's
`collect_trajectory`) gives an adapter that `PeftModel.from_pretrained` loads.

With one checkpoint more than the predictor reads, `predict` also checks the predictor where the answer is known
(`backtest`: one step from the checkpoints before the full-data one, scored against it), records the result and warns
where the step does worse than standing still.

Resolving the trajectory, planning the tensors, the streamed prediction and the self-check are the four steps of
`predict` and share its validated options; each step is a function of its own.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_model
from tqdm.auto import tqdm
from transformers.utils import logging

from ..hub import check_local_or_repo_id, push_folder, render_model_card
from ..io import OUTPUT_MARKER, atomic_output_dir, check_output_dir
from .backtest import backtest
from .checkpoints import (
    ADAPTER_FILE,
    WEIGHT_SUFFIXES,
    CheckpointReader,
    OutputTensor,
    ShardedCheckpointWriter,
    plan_shards,
    resolve_checkpoint,
)
from .extrapolate import PREDICTORS, Extrapolator
from .hypermodel import KnowHyperModel, tensor_kind
from .trajectory import SESSION_FILE

logger = logging.get_logger(__name__)

DEFAULT_HYPERMODEL = resources.files("hf_know.know") / "default_hypermodel"
PREDICTION_FILE = "know_prediction.json"
PREDICTION_KIND = "know-prediction"
NORM_LAYER_MODES = ("copy", "reset")
# Buffers of normalisation layers and the values a fresh layer starts from.
NORM_BUFFER_RESET = {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0}
# Files of the full-data checkpoint not carried over: its card, its session record, any earlier prediction record,
# the output marker of whatever wrote it.
SKIPPED_FILES = ("README.md", ".gitattributes", SESSION_FILE, PREDICTION_FILE, OUTPUT_MARKER)


def tensor_role(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, shapes: dict[str, tuple[int, ...]], adapter: bool = False
) -> str:
    """`"predict"` for the weights of conv / linear / embedding layers (floating `*.weight` of 2+ dimensions) and
    their biases, and in a PEFT adapter for every floating tensor of 2+ dimensions (LoRA factors, projection gamma);
    `"norm"` for 1-D weights and their biases (normalisation layers) and norm buffers; `"copy"` for everything else
    (position ids, class tokens, ...)."""
    stem, _, leaf = name.rpartition(".")
    if leaf in NORM_BUFFER_RESET:
        return "norm"
    if not dtype.is_floating_point:
        return "copy"
    if adapter and len(shape) >= 2:
        return "predict"
    weight_shape = shape if leaf == "weight" else shapes.get(f"{stem}.weight") if leaf == "bias" else None
    if weight_shape is None:
        return "copy"
    return "predict" if len(weight_shape) >= 2 else "norm"


def norm_reset_value(name: str) -> float:
    """What a fresh normalisation layer holds: weight 1, bias 0, running mean 0, running variance 1."""
    leaf = name.rpartition(".")[2]
    return NORM_BUFFER_RESET.get(leaf, 1.0 if leaf == "weight" else 0.0)


class KnowPredictor:
    """Runs a forgetting trajectory backwards to weights "as if trained on more data" (KNOW, arXiv 2508.05059).

    Args:
        hypermodel: the KNOWN hyper-model; only `predictor="known"` needs one.
        hypermodel_name: where the hyper-model came from, recorded in the prediction's metadata and card.
    """

    def __init__(self, hypermodel: KnowHyperModel | None = None, hypermodel_name: str | None = None):
        self.hypermodel = hypermodel.eval() if hypermodel is not None else None
        self.hypermodel_name = hypermodel_name

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike | None = None, **kwargs) -> KnowPredictor:
        """Load a hyper-model folder or Hub repo (`KnowHyperModel.from_pretrained` kwargs: `revision`, `token`...);
        with no argument, the default hyper-model shipped with hf-know (recipe: `configs/know/meta_train.yaml`)."""
        if path_or_repo_id is None:
            hypermodel = KnowHyperModel(**json.loads(DEFAULT_HYPERMODEL.joinpath("config.json").read_text()))
            with resources.as_file(DEFAULT_HYPERMODEL / "model.safetensors") as weights:
                load_model(hypermodel, weights)
            return cls(hypermodel, "hf-know default (meta_train.yaml)")
        check_local_or_repo_id(path_or_repo_id, "Hyper-model")
        return cls(KnowHyperModel.from_pretrained(path_or_repo_id, **kwargs), os.fspath(path_or_repo_id))

    def predict(
        self,
        checkpoints: Sequence[str | os.PathLike],
        steps: int = 3,
        output_dir: str | os.PathLike = "know-prediction",
        *,
        predictor: str = "known",
        r: float | None = None,
        norm_layers: str = "copy",
        exclude: Sequence[str] = (),
        shrink: dict[str, float] | None = None,
        allow_pickle: bool = False,
        chunk_size: int = 1 << 20,
        backtest_scalars: int = 100_000,
        max_shard_size: int | str = "5GB",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.float32,
        token: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Extrapolate `steps` steps past the full-data checkpoint and write a checkpoint folder `AutoModel*` loads.

        Args:
            checkpoints: the trajectory, **ordered from the smallest data to the full data**:
                `[Θ_{S-1}, ..., Θ_1, Θ_0]`, the reverse of the order the forgetting sessions ran in. Each is a local
                folder, a Hub repo id, or `"repo_id@revision"`: a model checkpoint, or a PEFT adapter (every floating
                tensor of 2+ dimensions of an adapter is predicted: LoRA factors, projection gamma). Checkpoints
                written by `collect_trajectory` record their subset size, and a list in the wrong order is refused.
            steps: extrapolation steps; step `k` stands for `(1/r)^k` times the full data (x2 / x4 / x8 at r = 0.5).
            output_dir: the result, written atomically (nothing is left behind on error). It may not be, contain
                or lie inside a checkpoint, and an existing non-empty folder is replaced only if it is an earlier
                prediction (or `overwrite=True`).
            predictor: one of `naive`, `task_vector`, `linear`, `quadratic`, `shrink`, `known`.
            r: the subset ratio, only recorded (read from the checkpoints when they carry it).
            norm_layers: `"copy"` normalisation parameters and buffers from the full-data checkpoint, or `"reset"`
                them to a fresh layer's values (what the authors' released script does, by omission).
            exclude: glob patterns of tensor names to copy from the full-data checkpoint instead of predicting.
            shrink: per-kind factors of `predictor="shrink"`.
            allow_pickle: read checkpoints that only hold `pytorch_model*.bin`, with `torch.load(weights_only=True)`.
            chunk_size: elements of one tensor read at a time from each checkpoint (bounds memory).
            backtest_scalars: scalars per kind of tensor in the self-check (`hf_know.know.backtest`), 0 for none: the
                predictor's one step from the checkpoints before the full-data one, scored against the full-data
                weights and recorded; a warning names each kind where it lands further from them than standing still.
                It takes one checkpoint more than the predictor reads.
            max_shard_size: largest safetensors shard written, as `transformers` `save_pretrained` takes it (an
                adapter is written as the one file PEFT reads).
            device: where the extrapolation runs (`"cuda"` for a GPU): each chunk of the trajectory is moved there,
                predicted (KNOWN in batches) and written back, so device memory holds one chunk at a time.
            dtype: the extrapolation's compute precision, `float32` or `float64` (values are read in their own dtype
                and written in it); KNOWN always runs its exp units in float32 with a float64 fallback.
            token: Hub token for private checkpoints.
            overwrite: replace a non-empty `output_dir` that is not an earlier prediction.

        Returns:
            the output folder.
        """
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor={predictor!r} is not one of {PREDICTORS}.")
        if norm_layers not in NORM_LAYER_MODES:
            raise ValueError(f"norm_layers={norm_layers!r} is not one of {NORM_LAYER_MODES}.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size}: expected a positive number of elements.")
        if backtest_scalars < 0:
            raise ValueError(f"backtest_scalars={backtest_scalars}: expected 0 (no self-check) or a positive number.")
        if len(checkpoints) < 2:
            raise ValueError(
                f"KNOW needs a trajectory of at least 2 checkpoints (smallest data first, full data last); got "
                f"{len(checkpoints)}."
            )
        device, dtype = _check_device(device), _check_dtype(dtype)
        if self.hypermodel is not None:
            self.hypermodel.to(device)  # in place: KNOWN runs where the chunks go
        extrapolator = Extrapolator(predictor, steps, self.hypermodel, shrink)
        if len(checkpoints) < extrapolator.window:
            raise ValueError(
                f"predictor={predictor!r} reads the last {extrapolator.window} checkpoints of the trajectory; got "
                f"{len(checkpoints)}. Collect more forgetting sessions or use a predictor with a shorter window."
            )
        # Local checkpoints are checked before any Hub download; downloaded ones when the output is written.
        check_output_dir(output_dir, PREDICTION_KIND, inputs=checkpoints, overwrite=overwrite)
        sources = [resolve_checkpoint(spec, token=token) for spec in checkpoints]
        inputs = [source.folder for source in sources]
        sessions = [_read_session(source.folder) for source in sources]
        r = _check_order(sources, sessions, r)
        readers = [CheckpointReader(source, allow_pickle=allow_pickle) for source in sources]
        try:
            _check_compatible(readers)
            roles = _tensor_roles(readers[-1], exclude)
            record = {
                "predictor": predictor,
                "steps": steps,
                "r": r,
                "data_multiplier": (1 / r) ** steps if r else None,
                "norm_layers": norm_layers,
                "exclude": list(exclude),
                "hypermodel": self.hypermodel_name if predictor == "known" else None,
                "conv_rule": self.hypermodel.conv_rule if self.hypermodel is not None else "any_kernel",
                "checkpoints": [
                    {"source": s.label, "repo_id": s.repo_id, "revision": s.revision, "commit": _commit(s)}
                    for s in sources
                ],
                "tensors": {role: sum(v == role for v in roles.values()) for role in ("predict", "norm", "copy")},
            }
            with atomic_output_dir(output_dir, PREDICTION_KIND, inputs=inputs, overwrite=overwrite) as tmp:
                compute = {"device": device, "dtype": dtype}
                _write_weights(tmp, readers, roles, extrapolator, record, chunk_size, max_shard_size, compute)
                step = Extrapolator(predictor, 1, self.hypermodel, shrink)
                record["backtest"] = _self_check(readers, roles, step, backtest_scalars, compute, record["conv_rule"])
                full = readers[-1].checkpoint.folder
                for path in full.iterdir():
                    if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and path.name not in SKIPPED_FILES:
                        shutil.copyfile(path, tmp / path.name)
                (tmp / PREDICTION_FILE).write_text(json.dumps(record, indent=2))
        finally:
            for reader in readers:
                reader.close()
        logger.info("KNOW %s x%d: %s", predictor, steps, record["tensors"])
        return Path(output_dir).resolve()


def _tensor_roles(full: CheckpointReader, exclude: Sequence[str]) -> dict[str, str]:
    """`tensor_role` of every tensor of the full-data checkpoint, with `exclude` matches copied."""
    shapes = {name: info.shape for name, info in full.tensors.items()}
    roles = {}
    for name, info in full.tensors.items():
        role = tensor_role(name, info.shape, info.dtype, shapes, full.is_adapter)
        excluded = role == "predict" and any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
        roles[name] = "copy" if excluded else role
    return roles


def _write_weights(folder, readers, roles, extrapolator, record, chunk_size, max_shard_size, compute) -> None:
    """Stream every tensor of the full-data checkpoint, `chunk_size` elements at a time, into sharded safetensors:
    predicted from the trajectory (on `compute["device"]`, in `compute["dtype"]`), reset, or copied. The next chunk
    is read from disk on a background thread while this one is predicted."""
    full = readers[-1]
    used = readers[-extrapolator.reads(len(readers)) :]
    outputs = [OutputTensor(name, info.dtype, info.shape) for name, info in full.tensors.items()]
    metadata = {"hf_know": json.dumps({"predictor": record["predictor"], "steps": record["steps"]})}
    if full.is_adapter:  # one adapter_model.safetensors, the only layout PEFT loads
        writer = ShardedCheckpointWriter(folder, [outputs], metadata, ADAPTER_FILE)
    else:
        writer = ShardedCheckpointWriter(folder, plan_shards(outputs, max_shard_size), metadata)

    def sources(name: str) -> list[CheckpointReader]:
        """The checkpoints a tensor's output is computed from (none for a reset norm layer)."""
        if roles[name] == "predict":
            return used
        return [] if roles[name] == "norm" and record["norm_layers"] == "reset" else [full]

    # Only the file reads run ahead (plain `preadv`): torch ops on a second thread would contend with the
    # prediction's OpenMP threads (measured 2x slower).
    stream = _read_ahead(
        partial(_read_all, sources(name), name, start, min(start + chunk_size, info.numel))
        for name, info in full.tensors.items()
        for start in range(0, info.numel, chunk_size)
    )
    total = sum(info.numel for info in full.tensors.values())
    desc = f"KNOW {record['predictor']} x{record['steps']}"
    with tqdm(total=total, desc=desc, unit="param", unit_scale=True) as progress:
        for name, info in full.tensors.items():
            writer.begin(name)
            kind, readers = tensor_kind(info.shape, record["conv_rule"]), sources(name)
            for start in range(0, info.numel, chunk_size):
                stop = min(start + chunk_size, info.numel)
                values = next(stream)
                if roles[name] == "predict":
                    window = _checked_window(values, readers, name, start, compute["dtype"])
                    window = window.to(compute["device"], non_blocking=True)
                    writer.write(_finite_prediction(extrapolator(window, kind).to("cpu", info.dtype), name, start))
                elif not values:
                    writer.write(torch.full((stop - start,), norm_reset_value(name), dtype=info.dtype))
                else:
                    writer.write(_checked(values[0], readers[0], name, start))
                progress.update(stop - start)
    writer.close()


def _self_check(readers, roles, step: Extrapolator, scalars: int, compute: dict, conv_rule: str) -> dict | None:
    """`backtest` of one step (None when off, for `naive`, whose step is the newest value, or when the checkpoints
    are too few), with a warning per kind of tensor where the step lands further from the full-data weights than the
    newest values before them."""
    if not scalars or step.predictor == "naive":
        return None
    if len(readers) - 1 < step.window:
        logger.info(
            f"KNOW self-check skipped: predictor={step.predictor!r} reads {step.window} checkpoints and checking it "
            f"takes one more; got {len(readers)}."
        )
        return None
    names = [name for name, role in roles.items() if role == "predict"]
    result = backtest(readers, names, step, scalars, compute, conv_rule)
    for kind, check in result.items():
        if check["error"] > check["newest_error"]:
            logger.warning(
                f"KNOW self-check, {kind} tensors: one {step.predictor} step from the checkpoints before the full-data "
                f"one lands further from it than their newest values (mean absolute error {check['error']:.3g} against "
                f"{check['newest_error']:.3g}, {check['scalars']} scalars). The predictor does not continue this "
                f"trajectory, so its prediction is unlikely to help; the check is recorded in {PREDICTION_FILE}."
            )
    return result


def _read_ahead(jobs: Iterable[Callable[[], torch.Tensor | None]]) -> Iterator[torch.Tensor | None]:
    """Each job's result in order, the next job running on a background thread while the caller uses this one."""
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for job in jobs:
            submitted = pool.submit(job)
            if pending is not None:
                yield pending.result()
            pending = submitted
        if pending is not None:
            yield pending.result()


def _check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, refused when it is not available here."""
    try:
        device = torch.device(device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(
            f"device={str(device)!r} is not available here ({error}); use 'cpu' or an available GPU."
        ) from error
    return device


def _check_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The compute dtype: float32 or float64 (a name or a torch dtype)."""
    allowed = {"float32": torch.float32, "float64": torch.float64}
    resolved = allowed.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in allowed.values():
        raise ValueError(f"dtype={dtype!r}: the extrapolation computes in one of {list(allowed)}.")
    return resolved


def _read_session(folder: Path) -> dict | None:
    """The session record `collect_trajectory` wrote, if any; a broken one is an error naming it."""
    path = folder / SESSION_FILE
    if not path.is_file():
        return None
    try:
        session = json.loads(path.read_text(encoding="utf-8"))
        int(session["subset_size"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not a valid session record ({type(error).__name__}: {error}); expected the JSON that "
            "collect_trajectory writes, with a 'subset_size'."
        ) from error
    return session


def _check_order(sources, sessions: list[dict | None], r: float | None) -> float | None:
    """Refuse a trajectory whose recorded subset sizes do not grow towards the full data; return r."""
    if any(session is None for session in sessions):
        return r
    sizes = [session["subset_size"] for session in sessions]
    if all(a < b for a, b in itertools.pairwise(sizes)):
        return r if r is not None else sessions[-1].get("r")
    hint = (
        " It looks reversed: pass the smallest subset first."
        if all(a > b for a, b in itertools.pairwise(sizes))
        else ""
    )
    listing = ", ".join(f"{s.label} ({size} examples)" for s, size in zip(sources, sizes, strict=True))
    raise ValueError(
        f"Checkpoints must go from the smallest data to the full data (growing subset sizes); got {listing}.{hint}"
    )


def _check_compatible(readers: list[CheckpointReader]) -> None:
    """Same tensor names, shapes and dtypes in every checkpoint as in the full-data one (the last)."""
    full = readers[-1]
    for reader in readers[:-1]:
        missing, extra = (
            sorted(set(full.tensors) - set(reader.tensors)),
            sorted(set(reader.tensors) - set(full.tensors)),
        )
        if missing or extra:
            raise ValueError(
                f"Checkpoint {reader.checkpoint.label!r} does not hold the tensors of the full-data checkpoint "
                f"{full.checkpoint.label!r}: missing {missing[:5]}, unexpected {extra[:5]}"
                f"{' (and more)' if len(missing) > 5 or len(extra) > 5 else ''}."
            )
        for name, expected in full.tensors.items():
            got = reader.tensors[name]
            if (got.shape, got.dtype) != (expected.shape, expected.dtype):
                raise ValueError(
                    f"Tensor {name!r} of checkpoint {reader.checkpoint.label!r} is {got.dtype} {list(got.shape)}; "
                    f"expected {expected.dtype} {list(expected.shape)} as in {full.checkpoint.label!r}."
                )


def _read_all(readers: list[CheckpointReader], name: str, start: int, stop: int) -> list[torch.Tensor]:
    """Elements `[start, stop)` of tensor `name` from each checkpoint."""
    return [reader.read(name, start, stop) for reader in readers]


def _checked_window(
    values: list[torch.Tensor], readers: list[CheckpointReader], name: str, start: int, dtype: torch.dtype
) -> torch.Tensor:
    """The chunks read from each checkpoint as the columns of one `[n, S]` trajectory in `dtype`, refused like
    `_checked` if a value is NaN or infinite."""
    window = torch.empty(len(values[0]), len(values), dtype=dtype)
    for column, chunk in enumerate(values):
        window[:, column] = chunk
    if _first_non_finite(window) is not None:
        for chunk, reader in zip(values, readers, strict=True):
            _checked(chunk, reader, name, start)
    return window


def _checked(values: torch.Tensor, reader: CheckpointReader, name: str, start: int) -> torch.Tensor:
    """`values` read from `reader` at `start`, refused if a floating value is NaN or infinite."""
    if values.is_floating_point() and (bad := _first_non_finite(values)) is not None:
        raise ValueError(
            f"Tensor {name!r} of checkpoint {reader.checkpoint.label!r} holds a non-finite value (flat index "
            f"{start + bad}); expected finite weights."
        )
    return values


def _finite_prediction(values: torch.Tensor, name: str, start: int) -> torch.Tensor:
    """`values` (already in the checkpoint's dtype), refused if any is NaN or infinite: a prediction that overflows
    the tensor's dtype is an error naming it, never a written checkpoint."""
    if (bad := _first_non_finite(values)) is not None:
        raise ValueError(
            f"The prediction for tensor {name!r} is not finite in {values.dtype} (flat index {start + bad}): the "
            "extrapolation overflows that dtype. Nothing was written; use fewer steps, another predictor, or exclude "
            "the tensor (exclude=[...])."
        )
    return values


def _first_non_finite(values: torch.Tensor) -> int | None:
    """Index of the first NaN or infinite element of a tensor (flat), or None. A NaN or infinity anywhere makes the
    sum non-finite, so a finite sum settles the common case in one pass."""
    if torch.isfinite(values.sum()):
        return None
    finite = torch.isfinite(values.reshape(-1))
    return None if finite.all() else int((~finite).nonzero()[0, 0])


def _commit(source) -> str | None:
    """The commit a Hub checkpoint was read at (its snapshot folder is named after it)."""
    return source.folder.name if source.repo_id is not None else None


def push_prediction(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    endpoint: str | None = None,
):
    """Push a `predict` output folder with a model card naming its source checkpoints, r, steps, predictor and
    hyper-model. Returns the commit."""
    folder = Path(folder)
    record_path = folder / PREDICTION_FILE
    if not record_path.is_file():
        raise ValueError(f"{folder} is not a KnowPredictor.predict output: it has no {PREDICTION_FILE}.")
    record = json.loads(record_path.read_text())
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    hub_sources = [c["repo_id"] for c in record["checkpoints"] if c["repo_id"]]
    adapter = (folder / ADAPTER_FILE).is_file()
    card = render_model_card(
        "know",
        {
            "library_name": "peft" if adapter else "transformers",
            "base_model": hub_sources[-1] if hub_sources else None,
            "tags": ["hf-know", "know", f"know-{record['predictor']}"],
        },
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        architecture=(config.get("architectures") or ["a PyTorch model"])[0],
        record=record,
        adapter=adapter,
    )
    return push_folder(
        folder,
        repo_id,
        card,
        revision=revision,
        private=private,
        token=token,
        endpoint=endpoint,
        commit_message=f"KNOW {record['predictor']} x{record['steps']}",
    )
