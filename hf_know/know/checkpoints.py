"""Checkpoint folders as KNOW reads and writes them: tensor by tensor, a slice at a time, never a whole model.

Reading parses the safetensors headers and `pread`s the byte range of the requested slice, so resident memory is
the slice, not the file (a memory map would keep every touched page resident). Writing lays out each shard's
header from the shapes known in advance, then streams every tensor's bytes in order. Pickled checkpoints
(`pytorch_model*.bin`) are refused unless the caller opts in, and are then read with `torch.load(weights_only=True)`.

One module of about 370 lines: reading and writing share the safetensors header layout and its checks, which
must agree byte for byte.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers.utils.hub import convert_file_size_to_int

from ..hub import check_local_or_repo_id, pull

SAFETENSORS_FILE = "model.safetensors"
# A PEFT adapter checkpoint's weights (never sharded: PEFT reads this one file).
ADAPTER_FILE = "adapter_model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth")
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and the byte offset of its data in the file."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder on disk, with where it came from (`label`: a path, or `repo_id@revision`)."""

    label: str
    folder: Path
    repo_id: str | None = None
    revision: str | None = None


def parse_checkpoint_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
    """`"repo_id@revision"` -> `(repo_id, revision)`; a path or a bare repo id -> `(spec, None)`."""
    spec = os.fspath(spec)
    if "@" in spec and not Path(spec).exists():
        repo_id, revision = spec.rsplit("@", 1)
        return repo_id, revision or None
    return spec, None


def resolve_checkpoint(spec: str | os.PathLike, *, token: str | None = None, endpoint: str | None = None) -> Checkpoint:
    """A local folder as is; otherwise a Hub repo id (with an optional `@revision`), downloaded to the HF cache."""
    path = Path(os.fspath(spec)).expanduser()
    if path.is_dir():
        return Checkpoint(label=str(spec), folder=path.resolve())
    if path.exists():
        raise ValueError(f"Checkpoint {str(spec)!r} is a file; expected a checkpoint folder or a Hub repo id.")
    repo_id, revision = parse_checkpoint_spec(spec)
    check_local_or_repo_id(repo_id, "Checkpoint")
    try:
        folder = pull(repo_id, revision, token=token, endpoint=endpoint)
    except RevisionNotFoundError as error:
        raise ValueError(f"Checkpoint {str(spec)!r}: the Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except (RepositoryNotFoundError, EntryNotFoundError, HFValidationError) as error:
        raise ValueError(
            f"Checkpoint {str(spec)!r} is neither a local folder nor a Hub repo that can be read ({error})."
        ) from error
    return Checkpoint(label=str(spec), folder=folder, repo_id=repo_id, revision=revision)


def read_safetensors_header(file: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor table and `__metadata__` of one safetensors file, checked against the file: the header fits the file,
    every tensor's byte range matches its dtype and shape and lies in the data section, ranges do not overlap and
    cover the data section exactly. A truncated or corrupted file is refused with its name, never read as zeros."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{file}: {size} bytes, too short for a safetensors header; the file is truncated.")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise ValueError(
                f"{file}: the header claims {length} bytes but the file holds {size - 8} after the length field; "
                "the file is truncated or not safetensors."
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{file}: the safetensors header is not valid JSON ({error}); the file is corrupted."
            ) from error
    if not isinstance(header, dict):
        raise ValueError(f"{file}: the safetensors header is a {type(header).__name__}; expected a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    tensors, ranges, data_size = {}, [], size - 8 - length
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{file}: header entry of tensor {name!r} is malformed ({entry!r}).") from error
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{file}: tensor {name!r} has dtype {dtype}, which KNOW does not handle.")
        info = TensorInfo(file, SAFETENSORS_DTYPES[dtype], shape, 8 + length + begin)
        if not 0 <= begin <= end <= data_size or end - begin != info.nbytes:
            raise ValueError(
                f"{file}: tensor {name!r} ({dtype} {list(shape)}, {info.nbytes} bytes) has data offsets [{begin}, "
                f"{end}] but the data section holds {data_size} bytes; the file is truncated or corrupted."
            )
        tensors[name] = info
        ranges.append((begin, end, name))
    covered = 0
    for begin, end, name in sorted(ranges):
        if begin != covered:
            problem = "overlaps the previous tensor" if begin < covered else f"leaves a gap at byte {covered}"
            raise ValueError(f"{file}: tensor {name!r} starts at byte {begin} and {problem}; the file is corrupted.")
        covered = end
    if covered != data_size:
        raise ValueError(
            f"{file}: the tensors cover {covered} bytes but the data section holds {data_size}; the file is corrupted."
        )
    return tensors, metadata


class CheckpointReader:
    """The tensors of one checkpoint folder, read a flat slice at a time.

    Args:
        checkpoint: the folder (`model.safetensors`, shards with `model.safetensors.index.json`, or a PEFT adapter's
            `adapter_model.safetensors`).
        allow_pickle: read a folder holding only `pytorch_model*.bin`, with `torch.load(weights_only=True)`.
    """

    def __init__(self, checkpoint: Checkpoint, allow_pickle: bool = False):
        self.checkpoint = checkpoint
        folder = checkpoint.folder
        self._state_dict = None
        self._fds: dict[Path, int] = {}
        files = self._weight_files(folder, SAFETENSORS_FILE, SAFETENSORS_INDEX)
        self.is_adapter = not files and (folder / ADAPTER_FILE).is_file()
        files = files or ([folder / ADAPTER_FILE] if self.is_adapter else [])
        if files:
            self.tensors: dict[str, TensorInfo] = {}
            for file in files:
                self.tensors.update(read_safetensors_header(file)[0])
            return
        pickles = self._weight_files(folder, PICKLE_FILE, PICKLE_INDEX)
        if not pickles:
            raise ValueError(
                f"Checkpoint {checkpoint.label!r} ({folder}) holds no {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, "
                f"{ADAPTER_FILE} or pickle weights."
            )
        if not allow_pickle:
            raise ValueError(
                f"Checkpoint {checkpoint.label!r} holds only pickle weights ({', '.join(p.name for p in pickles)}). "
                "Pickles can run code when loaded: convert it to safetensors, or pass allow_pickle=True to read it "
                "with torch.load(weights_only=True)."
            )
        self._state_dict = {}
        for file in pickles:
            self._state_dict.update(_load_pickle(file))
        self.tensors = {
            name: TensorInfo(folder, tensor.dtype, tuple(tensor.shape), 0) for name, tensor in self._state_dict.items()
        }

    @staticmethod
    def _weight_files(folder: Path, single: str, index: str) -> list[Path]:
        """The weight files of a checkpoint: the shards its index names (each inside the folder), or the single
        file."""
        if not (folder / index).is_file():
            return [folder / single] if (folder / single).is_file() else []
        path = folder / index
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = list(dict.fromkeys(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{path}: not a valid index ({type(error).__name__}: {error}); expected JSON with a 'weight_map' "
                "from tensor names to shard file names."
            ) from error
        files = []
        for shard in shards:
            file = (folder / shard).resolve() if isinstance(shard, str) else None
            if file is None or Path(shard).is_absolute() or folder.resolve() not in file.parents:
                raise ValueError(
                    f"{path} names the shard {shard!r}, which is not a file name inside the checkpoint folder "
                    f"{folder}; absolute paths and '..' are refused."
                )
            if not file.is_file():
                raise ValueError(f"{path} names the shard {shard!r}, which does not exist in {folder}.")
            files.append(file)
        return files

    def read(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements `[start, stop)` of tensor `name`, flattened in row-major order."""
        info = self.tensors[name]
        if self._state_dict is not None:
            return self._state_dict[name].reshape(-1)[start:stop].clone()
        itemsize = info.dtype.itemsize
        buffer = bytearray((stop - start) * itemsize)
        if not buffer:
            return torch.empty(0, dtype=info.dtype)
        if info.file not in self._fds:
            self._fds[info.file] = os.open(info.file, os.O_RDONLY)
        read = os.preadv(self._fds[info.file], [buffer], info.offset + start * itemsize)
        if read != len(buffer):
            raise ValueError(
                f"{info.file}: tensor {name!r} ends past the end of the file ({read} of {len(buffer)} bytes read); "
                "the file was truncated while being read."
            )
        return torch.frombuffer(buffer, dtype=info.dtype)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        self.close()


def _load_pickle(file: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, memory-mapped, with `weights_only=True` (no code runs); errors name the file."""
    try:
        state_dict = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        raise ValueError(
            f"{file} cannot be memory-mapped ({error}); only the zip format torch.save has written since PyTorch "
            "1.6 can. Re-save it with torch.save, or better convert it to safetensors."
        ) from error
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{file} is not a plain state dict of tensors ({error}); weights_only=True refuses anything else."
        ) from error
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ValueError(f"{file} holds a {type(state_dict).__name__}; expected a state dict of tensors.")
    return state_dict


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def plan_shards(tensors: Iterable[OutputTensor], max_shard_size: int | str) -> list[list[OutputTensor]]:
    """Split tensors, in order, into shards of at most `max_shard_size` bytes (a tensor larger than that gets a shard
    of its own), as `transformers`' `save_pretrained` does."""
    limit = convert_file_size_to_int(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


class ShardedCheckpointWriter:
    """Writes a (sharded) safetensors checkpoint whose tensor list is known in advance, streaming each tensor's data.

    Use `write(chunk)` repeatedly for each tensor of `shards`, in order; `close()` checks that every tensor was
    written in full and writes the index. The files are standard: `safetensors`, `transformers` and PEFT read them.
    `filename` names the file of an unsharded checkpoint (`ADAPTER_FILE` for a PEFT adapter).
    """

    def __init__(
        self,
        folder: Path,
        shards: list[list[OutputTensor]],
        metadata: dict[str, str] | None = None,
        filename: str = SAFETENSORS_FILE,
    ):
        self.folder = folder
        self.shards = shards
        self.metadata = {"format": "pt", **(metadata or {})}
        if len(shards) == 1:
            self.filenames = [filename]
        else:
            self.filenames = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        self._queue: Iterator[tuple[int, OutputTensor]] = iter(
            [(i, tensor) for i, shard in enumerate(shards) for tensor in shard]
        )
        self._handle = None
        self._shard = -1
        self._current: OutputTensor | None = None
        self._remaining = 0

    def _open_shard(self, index: int) -> None:
        if self._handle is not None:
            self._handle.close()
        header, offset = {"__metadata__": self.metadata}, 0
        for tensor in self.shards[index]:
            header[tensor.name] = {
                "dtype": DTYPE_NAMES[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + tensor.nbytes],
            }
            offset += tensor.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self._handle = open(self.folder / self.filenames[index], "wb")  # noqa: SIM115 - closed in close()
        self._handle.write(struct.pack("<Q", len(encoded)) + encoded)
        self._shard = index

    def begin(self, name: str) -> OutputTensor:
        """Start the next tensor, which must be `name`."""
        if self._remaining:
            raise RuntimeError(f"Tensor {self._current.name!r} is missing {self._remaining} bytes.")
        shard, tensor = next(self._queue)
        if tensor.name != name:
            raise RuntimeError(f"Expected tensor {tensor.name!r} next, got {name!r}.")
        if shard != self._shard:
            self._open_shard(shard)
        self._current, self._remaining = tensor, tensor.nbytes
        return tensor

    def write(self, chunk: torch.Tensor) -> None:
        """Append the next flat elements of the current tensor (cast to its dtype)."""
        data = chunk.detach().reshape(-1).to(self._current.dtype).contiguous().view(torch.uint8).numpy()
        if data.nbytes > self._remaining:
            raise RuntimeError(f"Tensor {self._current.name!r}: {data.nbytes} bytes more than its shape holds.")
        self._handle.write(data)
        self._remaining -= data.nbytes

    def close(self) -> None:
        if self._remaining or next(self._queue, None) is not None:
            raise RuntimeError("Not every tensor of the checkpoint was written.")
        if self._handle is not None:
            self._handle.close()
        if len(self.shards) > 1:
            weight_map = {t.name: self.filenames[i] for i, shard in enumerate(self.shards) for t in shard}
            total = sum(t.nbytes for shard in self.shards for t in shard)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))
