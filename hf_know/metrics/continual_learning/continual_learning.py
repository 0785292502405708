"""Continual-learning metrics from an accuracy matrix, as an `evaluate` module (loaded by path, no network).

Row i of the accuracy matrix holds the accuracy on tasks 0..T-1 after training on task i; entries above the
diagonal (tasks not seen yet) are ignored and may be NaN. Definitions (T tasks, a = accuracy matrix):

- `acc`: final average accuracy, mean_j a[T-1, j].
- `acc_incremental` (ACC⁻, average incremental accuracy): mean_i of mean_{j<=i} a[i, j].
- `forgetting` (Chaudhry et al. 2018, as L2P / DualPrompt): mean over j < T-1 of max_{j<=l<T-1} a[l, j] - a[T-1, j].
- `bwt` (backward transfer, Lopez-Paz and Ranzato 2017): mean over j < T-1 of a[T-1, j] - a[j, j].
- `retrieval_acc`: when a task-retrieval accuracy matrix of the same shape is given, its final average.

With a single task, nothing can be forgotten: `forgetting` and `bwt` are 0 by convention.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{chaudhry2018riemannian, title={Riemannian Walk for Incremental Learning}, year={2018}}
@inproceedings{lopez2017gradient, title={Gradient Episodic Memory for Continual Learning}, year={2017}}
"""

_KWARGS_DESCRIPTION = """
Args:
    accuracy: rows of the T x T accuracy matrix (row i: accuracy on every task after training task i).
    retrieval_accuracy: optional rows of the T x T task-retrieval accuracy matrix.
Returns:
    acc, acc_incremental, forgetting, bwt (floats, in the unit of the matrix), and retrieval_acc if given.
Example:
    >>> metric = hf_know.metrics.load("continual_learning")
    >>> metric.compute(accuracy=[[1.0, float("nan")], [0.5, 1.0]])
    {'acc': 0.75, 'acc_incremental': 0.875, 'forgetting': 0.5, 'bwt': -0.5}
"""


def _lower_triangle(rows, name: str) -> np.ndarray:
    matrix = np.asarray([list(row) for row in rows], dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty square T x T matrix (one row per task), got shape {matrix.shape}."
        )
    seen = np.tril(np.ones_like(matrix, dtype=bool))
    bad = np.argwhere(seen & ~np.isfinite(matrix))
    if len(bad):
        i, j = bad[0]
        raise ValueError(
            f"{name}[{i}][{j}] (task {j} after training task {i}) must be a finite number, got {matrix[i, j]}."
        )
    return matrix


def continual_learning_metrics(accuracy, retrieval_accuracy=None) -> dict:
    """The metrics of this module as a plain function (see the module docstring)."""
    a = _lower_triangle(accuracy, "accuracy")
    t = a.shape[0]
    result = {
        "acc": float(a[-1].mean()),
        "acc_incremental": float(np.mean([a[i, : i + 1].mean() for i in range(t)])),
        "forgetting": float(np.mean([a[j:-1, j].max() - a[-1, j] for j in range(t - 1)])) if t > 1 else 0.0,
        "bwt": float(np.mean([a[-1, j] - a[j, j] for j in range(t - 1)])) if t > 1 else 0.0,
    }
    if retrieval_accuracy is not None:
        r = _lower_triangle(retrieval_accuracy, "retrieval_accuracy")
        if r.shape != a.shape:
            raise ValueError(f"retrieval_accuracy has shape {r.shape}, expected the accuracy matrix's {a.shape}.")
        result["retrieval_acc"] = float(r[-1].mean())
    return result


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class ContinualLearning(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"accuracy": datasets.Sequence(datasets.Value("float64"))}),
                datasets.Features(
                    {
                        "accuracy": datasets.Sequence(datasets.Value("float64")),
                        "retrieval_accuracy": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
            ],
        )

    def _compute(self, accuracy, retrieval_accuracy=None):
        return continual_learning_metrics(accuracy, retrieval_accuracy)
