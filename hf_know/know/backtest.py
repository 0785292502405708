"""A predictor's self-check on the trajectory it is given, which `KnowPredictor.predict` records and warns on.

Past the full-data checkpoint nothing can check a prediction. One checkpoint earlier the answer is known: the
checkpoints before the full-data one, extrapolated one step, should land near it. A step that lands further from it
than their newest values already are says the predictor does not continue this trajectory, so its prediction beyond
the full data is unlikely to help. Landing closer is necessary for a helpful prediction, not sufficient
(`benchmarks/results/know.md`: KNOWN's one-step error is below the newest values' on FC matrices there, and its
predictions still lose accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checkpoints import CheckpointReader
from .extrapolate import Extrapolator
from .hypermodel import tensor_kind


def backtest(
    readers: Sequence[CheckpointReader],
    names: Sequence[str],
    extrapolator: Extrapolator,
    scalars: int,
    compute: dict,
    conv_rule: str = "any_kernel",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per kind of tensor among `names`: `error`, the mean absolute error of one `extrapolator` step from the
    checkpoints before the newest (`readers` ordered smallest data first) to the newest; `newest_error`, that of their
    newest values; `scalars`, how many were scored. Each tensor gives one block of contiguous elements at a seeded
    random offset, about `scalars` per kind in all, read and extrapolated on `compute["device"]` in
    `compute["dtype"]`."""
    *past, newest = readers
    used = past[-extrapolator.reads(len(past)) :]
    by_kind: dict[str, list[str]] = {}
    for name in names:
        by_kind.setdefault(tensor_kind(newest.tensors[name].shape, conv_rule), []).append(name)
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for kind, kind_names in by_kind.items():
        block = max(1, scalars // len(kind_names))
        windows, targets = [], []
        for name in kind_names:
            numel = newest.tensors[name].numel
            length = min(block, numel)
            start = int(torch.randint(numel - length + 1, (1,), generator=generator))
            read = [reader.read(name, start, start + length).to(compute["dtype"]) for reader in (*used, newest)]
            windows.append(torch.stack(read[:-1], dim=1))
            targets.append(read[-1])
        window, target = torch.cat(windows), torch.cat(targets)
        step = extrapolator(window.to(compute["device"]), kind).cpu()
        result[kind] = {
            "error": float((step - target).abs().mean()),
            "newest_error": float((window[:, -1] - target).abs().mean()),
            "scalars": len(target),
        }
    return result
