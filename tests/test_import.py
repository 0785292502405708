"""`import hf_know` registers the PEFT methods and stays light: KNOW and purification load on first use."""

from .conftest import run_python


def test_import_is_light_and_lazy_names_resolve():
    run_python(
        """
import sys
import hf_know
heavy = [m for m in ("trl", "sklearn", "datasets", "hf_know.purification", "hf_know.know") if m in sys.modules]
assert not heavy, heavy
from peft import PeftType
assert PeftType.PROJECTION and PeftType.CLUSTER_RETRIEVAL  # registered on import
assert hf_know.KnowPredictor.__module__ == "hf_know.know.predictor"
assert hf_know.PurifiedDistillTrainer.__name__ == "PurifiedDistillTrainer" and "trl" in sys.modules
assert "KnowPredictor" in dir(hf_know)
"""
    )
