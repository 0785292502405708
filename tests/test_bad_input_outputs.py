"""Bad input, outputs: no writer deletes or overwrites a file hf-know did not write (library calls and scripts)."""

import os
import signal
import subprocess
import sys

import pytest

from hf_know.hub import pull, push_folder
from hf_know.io import OUTPUT_MARKER, atomic_output_dir, check_output_dir
from hf_know.know import KnowHyperModel, KnowPredictor
from hf_know.purification import ClassifierRouter
from hf_know.purification.toy import TOY_TEACHERS, rationale_texts
from hf_know.testing import tiny_sentence_encoder, toy_rationale_data, word_tokenizer

from .conftest import REPO_ROOT, snapshot
from .test_know_predictor import make_trajectory


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """A user's folder: 5 checkpoints side by side with a file of their own."""
    root = tmp_path_factory.mktemp("user")
    folders, _, _ = make_trajectory(root)
    (root / "notes.txt").write_text("the user's notes")
    return root, folders


def refused(call, match, *folders):
    """`call()` raises ValueError matching `match`, and every file under `folders` is byte-identical after."""
    before = [snapshot(folder) for folder in folders]
    with pytest.raises(ValueError, match=match):
        call()
    assert [snapshot(folder) for folder in folders] == before


def test_predict_refuses_outputs_that_overlap_its_inputs(trajectory, monkeypatch):
    root, folders = trajectory
    predictor = KnowPredictor()
    for output, relation in [
        (folders[-1], "is the input"),
        (root, "contains the input"),
        (folders[0] / "out", "is inside the input"),
    ]:
        refused(lambda o=output: predictor.predict(folders, 1, o, predictor="naive"), relation, root)
    monkeypatch.chdir(root)
    refused(lambda: predictor.predict(folders, 1, ".", predictor="naive"), "contains the input", root)


def test_output_that_is_the_working_directory_or_home_is_refused(tmp_path, monkeypatch):
    (tmp_path / "mine.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    refused(lambda: check_output_dir(".", "know-prediction", overwrite=True), "is or contains the working", tmp_path)
    refused(lambda: check_output_dir(tmp_path.parent, "x", overwrite=True), "is or contains the working", tmp_path)
    with pytest.raises(ValueError, match="home folder"):
        check_output_dir("~", "know-prediction", overwrite=True)


def test_a_foreign_non_empty_folder_is_replaced_only_with_overwrite(tmp_path, trajectory):
    _, folders = trajectory
    target = tmp_path / "results"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    predictor = KnowPredictor()
    refused(lambda: predictor.predict(folders, 1, target, predictor="naive"), "a folder hf-know did not write", target)
    (tmp_path / "file").write_text("x")
    refused(
        lambda: predictor.predict(folders, 1, tmp_path / "file", predictor="naive"), "is an existing file", tmp_path
    )
    # An earlier output of the same kind is replaced; one of another kind is not.
    out = predictor.predict(folders, 1, tmp_path / "prediction", predictor="naive")
    assert (out / OUTPUT_MARKER).is_file()
    predictor.predict(folders, 2, out, predictor="naive")
    with atomic_output_dir(tmp_path / "pulled", "hub-snapshot") as folder:
        (folder / "x.txt").write_text("x")
    refused(lambda: predictor.predict(folders, 1, tmp_path / "pulled", predictor="naive"), "'hub-snapshot'", tmp_path)
    # With the explicit flag, the foreign folder is replaced.
    predictor.predict(folders, 1, target, predictor="naive", overwrite=True)
    assert not (target / "thesis.tex").exists() and (target / "model.safetensors").is_file()


def test_pull_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.txt").write_text("w")
    push_folder(source, "tester/pull-target")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2")
    refused(lambda: pull("tester/pull-target", local_dir=mine), "hf-know did not write", mine)
    monkeypatch.chdir(mine)
    refused(lambda: pull("tester/pull-target", local_dir="."), "working directory", mine)
    pulled = pull("tester/pull-target", local_dir=tmp_path / "pulled")
    assert (pulled / "weights.txt").read_text() == "w"
    assert pull("tester/pull-target", local_dir=pulled) == pulled  # an earlier pull is replaced


def test_save_pretrained_of_routers_and_hyper_models_never_overwrites_foreign_files(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    data = toy_rationale_data(8)
    router = ClassifierRouter(list(TOY_TEACHERS), tiny_sentence_encoder(word_tokenizer(rationale_texts(data))))
    for model in (router, KnowHyperModel()):
        refused(lambda m=model: m.save_pretrained(mine), "hf-know did not write", mine)
        model.save_pretrained(tmp_path / type(model).__name__)
        model.save_pretrained(tmp_path / type(model).__name__)  # an earlier save of the same class is updated
    refused(lambda: router.save_pretrained(tmp_path / "KnowHyperModel"), "'ClassifierRouter'", tmp_path)


def test_temporary_folders_of_a_killed_writer_are_cleaned_up(tmp_path):
    target = tmp_path / "out"
    code = (
        "import time\nfrom hf_know.io import atomic_output_dir\n"
        f"with atomic_output_dir({str(target)!r}, 'test') as tmp:\n"
        "    (tmp / 'half.bin').write_bytes(b'x' * 1000)\n    print('writing', flush=True)\n    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "writing":  # the writer died before writing: show why
        process.kill()
        pytest.fail(process.communicate()[1][-3000:])
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.hf-know-tmp.")  # recognisable by its name
    with atomic_output_dir(target, "test") as tmp:
        (tmp / "done.txt").write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "done.txt").read_text() == "complete"


def test_a_kill_during_the_swap_puts_the_previous_output_back(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target, "test") as tmp:
        (tmp / "v1.txt").write_text("one")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # a pid that no longer runs
    target.rename(tmp_path / f".out.hf-know-old.{process.pid}")  # what a kill between the two renames leaves
    with atomic_output_dir(target, "test") as tmp:
        assert (target / "v1.txt").read_text() == "one"  # restored before anything else happens
        (tmp / "v2.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "v2.txt"]


CONFIGS = REPO_ROOT / "configs"
SCRIPTS = [
    ("purify.py", ["--config", f"{CONFIGS}/purify/tiny.yaml"]),
    ("project.py", ["--config", f"{CONFIGS}/project/tiny_pretrain.yaml"]),
    ("continual.py", ["--config", f"{CONFIGS}/continual/tiny.yaml"]),
    ("know.py", ["meta-train", "--config", f"{CONFIGS}/know/meta_train.yaml"]),
    ("know.py", ["collect", "--config", f"{CONFIGS}/know/collect_tiny.yaml"]),
]


@pytest.mark.parametrize(("script", "args"), SCRIPTS, ids=[f"{s} {a[0]}" for s, a in SCRIPTS])
def test_scripts_refuse_the_working_directory_and_foreign_folders_before_any_work(tmp_path, script, args, hub):
    (tmp_path / "mine.txt").write_text("the user's file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.md").write_text("keep")
    before = snapshot(tmp_path)
    for output, message in ((".", "is or contains the working directory"), (str(foreign), "hf-know did not write")):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "trainers" / script), *args, "--output_dir", output],
            cwd=tmp_path,
            env={**os.environ, **hub.env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
        assert "ValueError" in result.stderr
        # refused before any work: no training run and no meta-data run was logged
        assert not any(mark in result.stdout + result.stderr for mark in ("train_runtime", "meta-data runs"))
        assert snapshot(tmp_path) == before


def test_know_predict_script_refuses_an_input_as_output(trajectory, hub):
    root, folders = trajectory
    before = snapshot(root)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "trainers" / "know.py"),
            "predict",
            "--predictor",
            "naive",
            "--checkpoints",
            *map(str, folders),
            "--output_dir",
            str(folders[-1]),
        ],
        env={**os.environ, **hub.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "is the input" in result.stderr, result.stderr[-2000:]
    assert snapshot(root) == before
