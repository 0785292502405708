"""Push folders with a rendered model card to the Hub and pull them back, on `huggingface_hub`.

Endpoint and token follow the usual `huggingface_hub` settings (`HF_ENDPOINT`, `HF_TOKEN`, `hf auth login`) unless
given explicitly. Tokens are passed to the client only: never logged, never written into a card.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, ModelCardData, snapshot_download

from .io import OUTPUT_MARKER, atomic_output_dir

CARD_FILENAME = "README.md"
TEMPLATES = resources.files("hf_know") / "model_cards"


def mixin_metadata(tags: list[str], arxiv_id: str) -> dict:
    """`ModelHubMixin` class keywords for an hf-know class: library name, tags, repository and paper."""
    return {
        "library_name": "hf-know",
        "tags": ["hf-know", *tags],
        "repo_url": "https://github.com/hf-know/hf-know",
        "paper_url": f"https://arxiv.org/abs/{arxiv_id}",
    }


def check_local_or_repo_id(name_or_path: str | os.PathLike, what: str) -> None:
    """Refuse a name that looks like a local path (`./x`, `/x`, `~/x`, `a/b/c`) but does not exist, naming it;
    otherwise huggingface_hub would take it for a repo id and fail with an unrelated `HFValidationError`."""
    text = os.fspath(name_or_path)
    if Path(text).expanduser().exists():
        return
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise ValueError(
            f"{what} {text!r} does not exist as a local folder, and is not a Hub repo id ('owner/name') either."
        )


def available_templates() -> list[str]:
    """Names of the model card templates shipped in `model_cards/` (inside the package: `hf_know/model_cards`)."""
    folder = TEMPLATES
    return sorted(entry.name.removesuffix(".md") for entry in folder.iterdir() if entry.name.endswith(".md"))


def render_model_card(template: str, card_data: ModelCardData | dict, **variables) -> ModelCard:
    """Render the Jinja2 template `model_cards/<template>.md` with Hub metadata and template variables.

    Args:
        template: template name, e.g. `"projection"` (see `available_templates()`).
        card_data: the YAML metadata the Hub reads: `library_name`, `base_model`, `tags`, `datasets`, `metrics`...
        **variables: values the template's body refers to.
    """
    if template not in available_templates():
        raise ValueError(f"No model card template {template!r}; expected one of {available_templates()}.")
    if isinstance(card_data, dict):
        card_data = ModelCardData(**card_data)
    text = TEMPLATES.joinpath(f"{template}.md").read_text(encoding="utf-8")
    return ModelCard.from_template(card_data, template_str=text, **variables)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    card: ModelCard | None = None,
    *,
    commit_message: str = "Upload with hf-know",
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Upload every file of `folder` (and `card` as README.md) to `repo_id` in one commit.

    The repo is created if missing; a `revision` other than `main` is created as a branch from `main` if missing,
    so successive pushes to several branches give one repo with several revisions. The folder itself is not
    modified; hf-know's output marker (`hf_know.io.OUTPUT_MARKER`) is not uploaded. Returns the commit, whose `oid`
    is the revision to pull exactly this upload back.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"push_folder expects an existing folder, got {str(folder)!r}.")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.name != OUTPUT_MARKER
        and not (card is not None and path.relative_to(folder).as_posix() == CARD_FILENAME)
    ]
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILENAME, path_or_fileobj=str(card).encode()))
    if not operations:
        raise ValueError(f"Nothing to push: {str(folder)!r} is empty and no model card was given.")
    return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)


def pull(
    repo_id: str,
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    *,
    allow_patterns: list[str] | str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Download `repo_id` at `revision` (branch, tag or commit); return the local folder.

    Without `local_dir` the files land in the Hugging Face cache (shared with transformers and peft). With
    `local_dir` they are downloaded beside it and renamed into place when complete. An existing non-empty
    `local_dir` is replaced only if it is an earlier `pull` or `overwrite=True` (see `hf_know.io`).
    """
    kwargs = dict(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns, token=token, endpoint=endpoint)
    if local_dir is None:
        return Path(snapshot_download(**kwargs))
    with atomic_output_dir(local_dir, "hub-snapshot", overwrite=overwrite) as tmp:
        snapshot_download(local_dir=tmp, **kwargs)
        # snapshot_download keeps bookkeeping in .cache/ of a local_dir; the result is the files alone.
        cache = tmp / ".cache"
        if cache.is_dir():
            shutil.rmtree(cache)
    return Path(local_dir).resolve()
