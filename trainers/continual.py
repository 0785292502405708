"""Learn a stream of tasks with PROTEUS, task-free at test time (`hf-know continual`; see
`hf_know/scripts/continual.py`).

    python trainers/continual.py --config configs/continual/digits.yaml
    accelerate launch --num_processes 2 --cpu trainers/continual.py --config configs/continual/tiny.yaml
"""

from hf_know.cli import parse
from hf_know.scripts.continual import main, make_parser

if __name__ == "__main__":
    main(*parse(make_parser()))
