import os
import subprocess
import sys
from pathlib import Path

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
