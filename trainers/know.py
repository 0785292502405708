"""KNOW from the command line: collect a forgetting trajectory, predict weights, meta-train the hyper-model
(`hf-know know`; see `hf_know/scripts/know.py`).

    python trainers/know.py collect --config configs/know/collect_tiny.yaml
    python trainers/know.py predict --config configs/know/predict_tiny.yaml
    python trainers/know.py meta-train --config configs/know/meta_train.yaml
"""

from hf_know.scripts.know import run

if __name__ == "__main__":
    run()
