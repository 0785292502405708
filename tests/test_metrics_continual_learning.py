"""Continual-learning metrics on accuracy matrices with known answers, through `evaluate` and as a function."""

import math

import pytest

import hf_know.metrics
from hf_know.metrics.continual_learning.continual_learning import continual_learning_metrics

NAN = math.nan


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        # no forgetting at all
        ([[1.0, NAN, NAN], [1.0, 1.0, NAN], [1.0, 1.0, 1.0]], (1.0, 1.0, 0.0, 0.0)),
        # plain forgetting: forgetting == -bwt
        ([[0.9, NAN, NAN], [0.7, 0.8, NAN], [0.6, 0.75, 0.95]], (2.3 / 3, (0.9 + 0.75 + 2.3 / 3) / 3, 0.175, -0.175)),
        # task 0 improves after task 1, then drops: forgetting counts from the best, bwt from the first accuracy
        ([[0.5, NAN, NAN], [0.9, 0.8, NAN], [0.7, 0.8, 0.9]], (0.8, (0.5 + 0.85 + 0.8) / 3, 0.1, 0.1)),
        # a single task: nothing to forget
        ([[0.7]], (0.7, 0.7, 0.0, 0.0)),
        # values above the diagonal (unseen tasks) are ignored
        ([[1.0, 0.3], [0.5, 1.0]], (0.75, 0.875, 0.5, -0.5)),
    ],
)
def test_known_matrices(matrix, expected):
    result = continual_learning_metrics(matrix)
    assert [result[k] for k in ("acc", "acc_incremental", "forgetting", "bwt")] == pytest.approx(expected)


def test_evaluate_module_loads_offline_and_matches():
    metric = hf_know.metrics.load("continual_learning")
    matrix = [[0.9, NAN, NAN], [0.7, 0.8, NAN], [0.6, 0.75, 0.95]]
    retrieval = [[1.0, NAN, NAN], [0.9, 1.0, NAN], [0.8, 0.9, 1.0]]
    result = metric.compute(accuracy=matrix, retrieval_accuracy=retrieval)
    assert result == pytest.approx({**continual_learning_metrics(matrix), "retrieval_acc": 0.9})
    assert "continual_learning" in hf_know.metrics.available()
    with pytest.raises(ValueError, match="No metric module 'accuracy'"):
        hf_know.metrics.load("accuracy")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accuracy": [[1.0, 0.5]]}, r"square T x T matrix .* got shape \(1, 2\)"),
        ({"accuracy": []}, "non-empty square"),
        (
            {"accuracy": [[1.0, NAN], [NAN, 1.0]]},
            r"accuracy\[1\]\[0\] \(task 0 after training task 1\) must be a finite",
        ),
        ({"accuracy": [[1.0]], "retrieval_accuracy": [[1.0, 0], [1, 1]]}, r"retrieval_accuracy has shape \(2, 2\)"),
    ],
)
def test_bad_matrices_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        continual_learning_metrics(**kwargs)
