"""Conflict Mitigation Value (CMV, knowledge purification, arXiv 2602.01064), as an `evaluate` module.

CMV is a method's average accuracy gain over TinyLLM's all-teachers distillation as teachers are added: with
accuracies measured at the same teacher counts n (e.g. n = 2, 3, 4),

    CMV = mean_n (Acc_method(n) - Acc_TinyLLM(n)).

Positive values mean the method mitigates the conflict between teachers' rationales; values are in the unit of
the accuracies (fractions in the paper, e.g. +0.025). Reading the paper through third-party notes, the exact
formula is inferred from the paper's description (arXiv 2602.01064), not quoted from it.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{jin2026knowledgepurification, title={Exploring Knowledge Purification in Multi-Teacher Knowledge
Distillation for LLMs}, booktitle={ICLR}, year={2026}}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the method's accuracy at each teacher count.
    references: TinyLLM's (all-teachers) accuracy at the same teacher counts, in the same order.
Returns:
    cmv: the mean difference.
Example:
    >>> metric = hf_know.metrics.load("cmv")
    >>> metric.compute(predictions=[0.56, 0.55, 0.57], references=[0.53, 0.53, 0.52])
    {'cmv': 0.0333...}
"""


def conflict_mitigation_value(predictions, references) -> dict:
    """The metric of this module as a plain function (see the module docstring)."""
    method, tinyllm = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if method.ndim != 1 or method.shape != tinyllm.shape or method.size == 0:
        raise ValueError(
            f"predictions and references must be equally long, non-empty lists of accuracies (one per teacher "
            f"count), got {method.shape} and {tinyllm.shape}."
        )
    if not (np.isfinite(method).all() and np.isfinite(tinyllm).all()):
        raise ValueError("Accuracies must be finite numbers.")
    return {"cmv": float((method - tinyllm).mean())}


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class Cmv(evaluate.Metric):
    def _info(self):
        accuracy = datasets.Value("float64")
        features = datasets.Features({"predictions": accuracy, "references": accuracy})
        return evaluate.MetricInfo(
            description=__doc__, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION, features=features
        )

    def _compute(self, predictions, references):
        return conflict_mitigation_value(predictions, references)
