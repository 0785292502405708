"""Every Python example of the README runs verbatim, offline, against a loopback Hub."""

import re

import pytest

from .conftest import REPO_ROOT, run_python

EXAMPLES = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs_verbatim(code, tmp_path, hub):
    run_python(code, env=hub.env, cwd=tmp_path)
