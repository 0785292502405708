"""Knowledge purification for multi-teacher rationale distillation (arXiv 2602.01064)."""

from .data import RATIONALE_FEATURES, RationaleDataReport, load_tinyllm, validate_rationale_data

__all__ = ["RATIONALE_FEATURES", "RationaleDataReport", "load_tinyllm", "validate_rationale_data"]
