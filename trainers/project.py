"""Fine-tune an image classifier with model projection or a baseline (`hf-know project`; see
`hf_know/scripts/project.py`).

    python trainers/project.py --config configs/project/digits_projection.yaml
    accelerate launch --num_processes 2 --cpu trainers/project.py --config configs/project/tiny.yaml
"""

from hf_know.cli import parse
from hf_know.scripts.project import main, make_parser

if __name__ == "__main__":
    main(*parse(make_parser()))
