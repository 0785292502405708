import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_know.testing import LoopbackHub

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def hub():
    """Every test talks to a Hub on 127.0.0.1: nothing can reach the real Hub, Hub code runs for real."""
    with LoopbackHub() as loopback:
        yield loopback


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) with its bytes: equal snapshots mean nothing was lost or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run_python(code: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python process (only what it imports is loaded) and fail loudly on error."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships it: gzipped, unsigned bytes, big-endian dimensions."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
    """Fashion-MNIST's four files with 30 training and 10 test images per class; image i of class c is filled with
    the value 8 * c + (i % 8), so an image's class can be read back from its pixels."""
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 30), ("t10k", 10)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = np.stack([np.full((28, 28), 8 * c + i % 8) for i, c in enumerate(labels)])
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path
