"""Safe outputs: never write over an input or over a folder hf-know did not write, and write atomically.

Every writer of the project (`KnowPredictor.predict`, `hf_know.hub.pull`, the scripts, trajectory sessions) goes
through `atomic_output_dir`; the scripts call `check_output_dir` before any work starts, and `claim_output_dir`
before their `Trainer` runs. The rules, checked before anything is touched:

- an output that is, contains, or lies inside one of the run's inputs is refused, naming both paths;
- an output that is, or contains, the working directory, the home folder or the filesystem root is refused;
- an existing file is refused; an existing non-empty folder is replaced only when it holds the marker file
  (`OUTPUT_MARKER`) of an earlier output of the same kind, or when the caller passes `overwrite=True`.

The result is written into a temporary folder beside the target, named `.<target>.hf-know-tmp.<pid>.<random>`, and
renamed into place when complete, so a crash leaves the previous output intact. Temporary folders that a killed
run left behind are removed by the next write to the same target (and a previous output that a kill caught mid-swap
is renamed back first).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# The marker file of an hf-know output. Its leading underscore keeps it out of `Trainer.push_to_hub` uploads (which
# ignore "_*"); `hf_know.hub.push_folder` skips it too.
OUTPUT_MARKER = "_hf_know_output.json"
TMP_TAG = "hf-know-tmp"
OLD_TAG = "hf-know-old"


def output_kind(folder: str | os.PathLike) -> str | None:
    """The kind recorded in `folder`'s marker (e.g. `"know-prediction"`), or None if hf-know did not write it."""
    marker = Path(folder) / OUTPUT_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("kind")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def _related(output: Path, path: Path) -> str | None:
    if output == path:
        return "is"
    if output in path.parents:
        return "contains"
    if path in output.parents:
        return "is inside"
    return None


def check_disjoint(target: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse an output that is, contains or lies inside one of `inputs` (None and paths that do not exist are
    ignored), or that is or contains the working directory, the home folder or the root; return it resolved."""
    output = Path(target).expanduser().resolve()
    for given in inputs:
        if given is None or not Path(given).expanduser().exists():
            continue
        path = Path(given).expanduser().resolve()
        relation = _related(output, path)
        if relation is not None:
            raise ValueError(
                f"Output folder {str(output)!r} {relation} the input {str(path)!r}: writing it would destroy what "
                "the run reads. Choose an output folder outside every input."
            )
    for name, protected in (("working directory", Path.cwd()), ("home folder", Path.home()), ("root", Path("/"))):
        protected = protected.resolve()
        if output == protected or output in protected.parents:
            raise ValueError(
                f"Output folder {str(output)!r} is or contains the {name} ({str(protected)!r}); it would be replaced "
                "as a whole. Name a folder of its own, e.g. outputs/<run>."
            )
    return output


def check_output_dir(
    target: str | os.PathLike,
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    recognise: Callable[[Path], bool] | None = None,
) -> Path:
    """Refuse an output folder that would lose something, before any work starts; return it resolved.

    Args:
        target: the output folder.
        kind: what is written there (recorded in the marker; an earlier output of the same kind may be replaced).
        inputs: paths the run reads (folders or files; None and paths that do not exist are ignored).
        overwrite: replace an existing non-empty folder that hf-know did not write (never an input).
        recognise: tells an earlier output of this kind that carries no marker (e.g. a `save_pretrained` folder).

    Raises:
        ValueError: naming the output and what it would have destroyed.
    """
    output = check_disjoint(target, inputs)
    if output.exists() and not output.is_dir():
        raise ValueError(f"Output {str(output)!r} is an existing file; expected a folder (or a path that is free).")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        found = output_kind(output)
        if found != kind and not (recognise is not None and recognise(output)):
            what = f"an hf-know output of kind {found!r}" if found else "a folder hf-know did not write"
            raise ValueError(
                f"Output folder {str(output)!r} is not empty and is {what}; a {kind!r} output would replace or "
                "overwrite its files. Choose an empty or new folder, or pass overwrite=True (--overwrite_output_dir "
                "true) to replace it."
            )
    return output


def claim_output_dir(target: str | os.PathLike, kind: str, **check) -> Path:
    """`check_output_dir(target, kind, **check)`, then mark an absent or empty target as this run's output of
    `kind`: what the run writes there before its final atomic write (a `Trainer`'s checkpoints, say) then lands in a
    folder the final write may replace, instead of making it look foreign. A target that already holds files is
    left untouched."""
    output = check_output_dir(target, kind, **check)
    if not output.exists() or not any(output.iterdir()):
        output.mkdir(parents=True, exist_ok=True)
        _write_marker(output, kind)
    return output


def _write_marker(folder: Path, kind: str) -> None:
    (folder / OUTPUT_MARKER).write_text(json.dumps({"kind": kind, "writer": "hf-know"}), encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(output: Path, tag: str) -> list[Path]:
    """Sibling folders `.<name>.<tag>.<pid>[.<random>]` of writers that are no longer running."""
    found = []
    for path in output.parent.glob(f".{output.name}.{tag}.*"):
        pid = path.name[len(f".{output.name}.{tag}.") :].split(".")[0]
        if path.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            found.append(path)
    return found


def clean_leftovers(output: Path) -> None:
    """Undo what a killed writer left beside `output`: put back a previous output caught mid-swap, remove
    temporary folders."""
    for old in _leftovers(output, OLD_TAG):
        if not output.exists():
            old.rename(output)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in _leftovers(output, TMP_TAG):
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(
    target: str | os.PathLike,
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`, on error it is removed.

    `check_output_dir(target, kind, inputs=..., overwrite=...)` runs first, so nothing is written where it would
    lose a file. The result carries a marker (`OUTPUT_MARKER`) recording `kind`, which lets a later run of the same
    kind replace it. A crash or exception inside the block leaves the previous `target` (if any) untouched.
    """
    output = check_output_dir(target, kind, inputs=inputs, overwrite=overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.{TMP_TAG}.{os.getpid()}.", dir=output.parent))
    try:
        yield tmp
        _write_marker(tmp, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.{OLD_TAG}.{os.getpid()}")
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_output(
    target: str | os.PathLike, kind: str, model, metrics: dict, *, metrics_file: str = "metrics.json", **check
) -> Path:
    """Write `model.save_pretrained` and `metrics` (as JSON in `metrics_file`) to `target` in one atomic step
    (`atomic_output_dir(target, kind, **check)`); return the target."""
    with atomic_output_dir(target, kind, **check) as tmp:
        model.save_pretrained(tmp)
        (tmp / metrics_file).write_text(json.dumps(metrics, indent=2))
    return Path(target)


class GuardedSaveMixin:
    """For `ModelHubMixin` classes: `save_pretrained` refuses a non-empty folder that is not an earlier save of the
    same class (`is_saved_folder`), unless `overwrite=True`; files of an earlier save are overwritten as usual."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, overwrite: bool = False, **kwargs):
        kind = type(self).__name__
        check_output_dir(save_directory, kind, overwrite=overwrite, recognise=self.is_saved_folder)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def is_saved_folder(cls, folder: Path) -> bool:
        """Whether `folder` holds what `save_pretrained` of this class writes; subclasses say how to tell."""
        return False
