"""Knowledge purification (arXiv 2602.01064): several teachers' rationales become one per question before
distilling into a small student with `PurifiedDistillTrainer`."""

from .config import DISTILL_MODES, DistillationArguments, PurifiedDistillConfig, PurifiedSeq2SeqDistillConfig
from .data import (
    RATIONALE_FEATURES,
    RationaleDataReport,
    format_question,
    load_tinyllm,
    validate_rationale_data,
)
from .encoder import SentenceEncoder
from .generation import generate_rationales
from .metrics import exact_match_accuracy, predict_answers
from .purifier import Purifier, SingleTeacher
from .purifiers import (
    PURIFIERS,
    AggregationPurifier,
    ClassifierRouter,
    PlackettLuceRouter,
    ReinforceSelector,
    SimilarityRouter,
    load_router,
)
from .router import TeacherRouter
from .support import rationale_support, teacher_scores
from .trainer import PurifiedDistillTrainer, PurifiedSeq2SeqDistillTrainer

__all__ = [
    "DISTILL_MODES",
    "PURIFIERS",
    "RATIONALE_FEATURES",
    "AggregationPurifier",
    "ClassifierRouter",
    "DistillationArguments",
    "PlackettLuceRouter",
    "PurifiedDistillConfig",
    "PurifiedDistillTrainer",
    "PurifiedSeq2SeqDistillConfig",
    "PurifiedSeq2SeqDistillTrainer",
    "Purifier",
    "RationaleDataReport",
    "ReinforceSelector",
    "SentenceEncoder",
    "SimilarityRouter",
    "SingleTeacher",
    "TeacherRouter",
    "exact_match_accuracy",
    "format_question",
    "generate_rationales",
    "load_router",
    "load_tinyllm",
    "predict_answers",
    "rationale_support",
    "teacher_scores",
    "validate_rationale_data",
]
