"""hf_know.hub and the loopback Hub, with the real huggingface_hub client."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import peft
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hf_know.hub import available_templates, pull, push_folder, render_model_card
from hf_know.testing import LoopbackHub

from .conftest import REPO_ROOT

CARD_DATA = {
    "library_name": "peft",
    "base_model": "tester/base",
    "tags": ["hf-know", "model-projection"],
    "datasets": ["sklearn-digits"],
    "metrics": ["accuracy"],
}
CARD_VARS = dict(
    model_name="m",
    repo_id="tester/m",
    base_model="tester/base",
    method="projection",
    num_projected_layers=3,
    trainable_parameters="10",
    total_parameters="100",
    modules_to_save="classifier",
    dataset="digits",
    metrics={"accuracy": "0.9"},
)


def test_render_card_has_hub_metadata():
    card = render_model_card("projection", CARD_DATA, **CARD_VARS)
    assert card.data.library_name == "peft" and card.data.base_model == "tester/base"
    assert card.data.tags == ["hf-know", "model-projection"] and card.data.metrics == ["accuracy"]
    assert "| accuracy | 0.9 |" in card.text
    with pytest.raises(ValueError, match="No model card template 'nope'; expected one of"):
        render_model_card("nope", CARD_DATA)


def test_push_and_pull_revisions_with_small_and_lfs_files(tmp_path, hub):
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.safetensors").write_bytes(os.urandom(300_000))
    card = render_model_card("projection", CARD_DATA, **CARD_VARS)
    first = push_folder(folder, "tester/pushed", card, revision="session-0")
    (folder / "config.json").write_text('{"a": 2}')
    second = push_folder(folder, "tester/pushed", card, revision="session-1")
    stored = hub.state.repo("model", "tester/pushed").resolve(second.oid).files
    assert stored["sub/weights.safetensors"].lfs and not stored["config.json"].lfs
    assert sorted(HfApi().list_repo_files("tester/pushed", revision="session-1")) == [
        ".gitattributes",
        "README.md",
        "config.json",
        "sub/weights.safetensors",
    ]
    for revision, expected in [("session-0", 1), (first.oid, 1), ("session-1", 2), (second.oid, 2)]:
        local = pull("tester/pushed", revision=revision, local_dir=tmp_path / f"pulled-{revision}")
        assert (local / "config.json").read_text() == f'{{"a": {expected}}}'
        assert (local / "sub" / "weights.safetensors").read_bytes() == (folder / "sub/weights.safetensors").read_bytes()
        assert not (local / ".cache").exists()
    assert "model-projection" in (local / "README.md").read_text()
    assert not list(tmp_path.glob(".pulled-*"))  # no temporary folder left behind


def test_pull_keeps_previous_output_when_download_fails(tmp_path, hub):
    source = tmp_path / "source"
    source.mkdir()
    (source / "old.txt").write_text("previous")
    push_folder(source, "tester/kept")
    target = pull("tester/kept", local_dir=tmp_path / "kept")
    with pytest.raises(HfHubHTTPError):
        pull("tester/does-not-exist", local_dir=target)
    assert (target / "old.txt").read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == [
        "kept",
        "source",
    ]


def test_token_is_honoured(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with LoopbackHub(token="hf_secret") as private:
        with pytest.raises(HfHubHTTPError, match="401"):
            push_folder(tmp_path, "tester/locked", token="hf_wrong")
        commit = push_folder(tmp_path, "tester/locked", token="hf_secret", endpoint=private.endpoint)
        assert private.state.repo("model", "tester/locked").resolve(commit.oid).files["f.txt"].size == 1


def test_push_folder_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="expects an existing folder"):
        push_folder(tmp_path / "missing", "tester/x")


def test_templates_ship_in_the_wheel(tmp_path):
    """Build the wheel, install it in a fresh venv (dependencies borrowed, not hf_know), render a card there and
    find the shipped metric modules and default KNOWN hyper-model."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", REPO_ROOT],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("hf_know-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    deps = str(Path(peft.__file__).resolve().parent.parent)  # the site-packages folder the dependencies live in
    (site / "deps.pth").write_text(deps + "\n")  # a plain path line: the dev install's .pth hooks are not run
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    code = textwrap.dedent(
        f"""
        import pathlib, hf_know, hf_know.hub as hub
        assert hf_know.__file__.startswith({str(site)!r}), hf_know.__file__
        assert "projection" in hub.available_templates()
        card = hub.render_model_card("projection", {CARD_DATA!r}, **{CARD_VARS!r})
        assert card.data.library_name == "peft"
        import hf_know.metrics
        assert hf_know.metrics.available() == ["cmv", "continual_learning"]
        assert "router" in hub.available_templates()
        from hf_know.scripts import purify  # the scripts behind `hf-know` ship too
        assert (pathlib.Path(hf_know.__file__).parent / "py.typed").is_file()
        from hf_know.purification.purifiers import load_router  # the purifiers subpackage ships too
        assert "know" in hub.available_templates()
        predictor = hf_know.KnowPredictor.from_pretrained()  # the default hyper-model ships in the wheel
        assert predictor.hypermodel.window == 5
        print("ok")
        """
    )
    result = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "ok", result.stderr


def test_available_templates():
    assert "projection" in available_templates()


def test_head_errors_have_no_body_on_a_kept_alive_connection(hub):
    """A body after a HEAD answer would be read as the start of the next response on the same connection."""
    import http.client

    host, port = hub.endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    auth = {"Authorization": f"Bearer {hub.state.token}"}
    for _ in range(2):
        connection.request("HEAD", "/tester/missing/resolve/main/README.md", headers=auth)
        response = connection.getresponse()
        assert response.status == 404 and response.read() == b""
        assert response.getheader("X-Error-Code") == "RepoNotFound"
    connection.request("GET", "/api/whoami-v2", headers=auth)
    assert connection.getresponse().status == 200
    connection.close()


def test_a_repo_named_without_a_namespace_lands_in_the_users(hub, tmp_path):
    url = HfApi().create_repo("no-namespace", exist_ok=True)
    assert url.repo_id == "loopback-user/no-namespace"
    (tmp_path / "f.txt").write_text("x")
    push_folder(tmp_path, "loopback-user/no-namespace")
    assert "f.txt" in HfApi().list_repo_files("loopback-user/no-namespace")
    HfApi().delete_repo("no-namespace")
    assert not HfApi().repo_exists("loopback-user/no-namespace")
