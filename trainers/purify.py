"""Distil several teachers' rationales into a small student, purified first (`hf-know purify`; see
`hf_know/scripts/purify.py`).

    python trainers/purify.py --config configs/purify/tiny.yaml
    accelerate launch --num_processes 2 --cpu trainers/purify.py --config configs/purify/tiny.yaml
    python trainers/purify.py --config configs/purify/tiny.yaml --use_peft --lora_r 16
"""

from hf_know.cli import parse
from hf_know.scripts.purify import main, make_parser

if __name__ == "__main__":
    main(*parse(make_parser()))
