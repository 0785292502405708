"""The command-line scripts behind `hf-know <command>` and `trainers/*.py`: each a `main(...)` over its parsed
dataclasses and a `make_parser()`, as trl's scripts are."""
