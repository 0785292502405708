"""The five knowledge-purification methods (arXiv 2602.01064), all with `purify(dataset)`; the four routing ones
save, load and push as Hub models (`load_router` picks the class from
the saved `config.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.constants import CONFIG_NAME

from ...hub import check_local_or_repo_id
from ..router import TeacherRouter
from .aggregation import DEFAULT_AGGREGATION_PROMPT, AggregationPurifier
from .classifier import ClassifierRouter
from .plackett_luce import PlackettLuceRouter
from .reinforce import ReinforceSelector
from .similarity import SimilarityRouter

ROUTERS: dict[str, type[TeacherRouter]] = {
    cls.method: cls for cls in (PlackettLuceRouter, ClassifierRouter, SimilarityRouter, ReinforceSelector)
}
PURIFIERS = ("aggregation", *ROUTERS)


def load_router(name_or_path: str | Path, revision: str | None = None, **kwargs) -> TeacherRouter:
    """Load any saved or pushed router (a local folder or a Hub repo) as its own class."""
    check_local_or_repo_id(name_or_path, "Router")
    local = Path(name_or_path) / CONFIG_NAME
    config_file = local if local.is_file() else hf_hub_download(str(name_or_path), CONFIG_NAME, revision=revision)
    method = json.loads(Path(config_file).read_text()).get("method")
    if method not in ROUTERS:
        raise ValueError(
            f"{name_or_path} is not an hf-know router: config.json names method={method!r}, expected "
            f"one of {sorted(ROUTERS)}."
        )
    return ROUTERS[method].from_pretrained(name_or_path, revision=revision, **kwargs)


__all__ = [
    "DEFAULT_AGGREGATION_PROMPT",
    "PURIFIERS",
    "ROUTERS",
    "AggregationPurifier",
    "ClassifierRouter",
    "PlackettLuceRouter",
    "ReinforceSelector",
    "SimilarityRouter",
    "load_router",
]
