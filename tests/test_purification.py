"""Knowledge purification: scores, the five purifiers, the routers' Hub round trip, PurifiedDistillTrainer."""

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
import yaml
from datasets import Dataset

import hf_know.metrics
from hf_know.purification import (
    AggregationPurifier,
    ClassifierRouter,
    PlackettLuceRouter,
    PurifiedDistillConfig,
    ReinforceSelector,
    SimilarityRouter,
    SingleTeacher,
    generate_rationales,
    load_router,
    teacher_scores,
)
from hf_know.purification.generation import answer_prompt, parse_answer, teacher_forced_prompt
from hf_know.purification.toy import (
    TOY_TEACHERS,
    rationale_texts,
    tiny_sentence_encoder,
    tiny_t5,
    toy_rationale_data,
    word_tokenizer,
)
from hf_know.testing import tiny_llama

from .conftest import REPO_ROOT

TEACHERS = list(TOY_TEACHERS)


@pytest.fixture(scope="module")
def toy():
    data = toy_rationale_data(128)
    tokenizer = word_tokenizer(rationale_texts(data))
    torch.manual_seed(0)
    return data.select(range(96)), data.select(range(96, 128)), tokenizer, tiny_sentence_encoder(tokenizer)


def right_teacher_share(purified) -> float:
    """How often the purified rationale came from the teacher that is right on that kind of question."""
    right = [
        (t == "adder") == ("plus" in q) for t, q in zip(purified["purified_teacher"], purified["question"], strict=True)
    ]
    return sum(right) / len(right)


def config(tmp_path, **kwargs) -> PurifiedDistillConfig:
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        disable_tqdm=True,
        use_cpu=True,
        num_train_epochs=1,
        report_to="none",
    )
    return PurifiedDistillConfig(**{**defaults, **kwargs})


# ---- scores ------------------------------------------------------------------------------------------------------
def test_teacher_scores_from_unforced_answers_and_from_rationale_support(toy):
    train, _, _, encoder = toy
    scores = teacher_scores(train)  # every toy row has unforced answers: no encoder needed
    plus = torch.tensor(["plus" in q for q in train["question"]])
    assert (scores[plus, 0] == 1).all() and (scores[~plus, 0] == -1).all()
    assert scores[:, 1].isnan().sum() == 12  # every 8th row lacks the multiplier's rationale
    rows = Dataset.from_dict(
        {
            "question": ["q"],
            "choices": [["12", "7", "9"]],
            "answer": ["7"],
            "rationales": [["we add to get 7", "we multiply to get 12", ""]],
            "teacher_answers": [["", "", ""]],
        }
    )
    with pytest.raises(ValueError, match="no unforced teacher_answers"):
        teacher_scores(rows)
    support = teacher_scores(rows, encoder)[0]
    assert support[0] > 0 > support[1] and math.isnan(support[2])


# ---- routers -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "threshold"), [(PlackettLuceRouter, 0.65), (ClassifierRouter, 0.75), (SimilarityRouter, 0.75)]
)
def test_routers_learn_which_teacher_to_trust_from_the_question(toy, cls, threshold):
    train, test, _, encoder = toy
    purified = cls(TEACHERS, encoder).fit(train).purify(test)
    assert right_teacher_share(purified) >= threshold  # chance is 0.5
    missing = [i for i, r in enumerate(test["rationales"]) if not r[1]]
    assert all(purified[i]["purified_teacher"] == "adder" for i in missing)  # a missing rationale is never chosen
    assert purified[0]["purified_reason"].startswith(f"{cls.method}: ")


def test_plackett_luce_weights_reference_rows_by_similarity(toy):
    *_, encoder = toy
    router = PlackettLuceRouter(TEACHERS, encoder, gamma=100.0)
    directions = torch.eye(encoder.dim)[:2]
    references = directions.repeat_interleave(5, 0)  # 5 rows near each direction
    scores = torch.tensor([[1.0, -1.0]] * 5 + [[-1.0, 1.0]] * 5)
    router._fit(references, scores)
    assert router.teacher_logits(directions).argmax(1).tolist() == [0, 1]


def test_similarity_router_skips_positives_that_do_not_beat_the_negatives(toy):
    *_, encoder = toy
    router = SimilarityRouter(TEACHERS, encoder)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    assert router.sample_teacher_loss(logits, torch.tensor([[1.0, 1.0], [1.0, 1.0]])).item() == 0.0
    loss = router.sample_teacher_loss(logits, torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2, rel=1e-5)


def test_router_refuses_single_class_labels_and_other_teacher_counts(toy):
    train, _, _, encoder = toy
    one_sided = torch.tensor([[1.0, -1.0]] * len(train))
    with pytest.raises(ValueError, match=r"single class: teacher 'adder' is best on all 96"):
        ClassifierRouter(TEACHERS, encoder).fit(train, one_sided)
    three = SimilarityRouter(["a", "b", "c"], encoder)
    with pytest.raises(ValueError, match=r"routes among 3 teachers .* has 2 per row"):
        three.fit(train)
    with pytest.raises(ValueError, match=r"routes among 3 teachers"):
        three.purify(train)


@pytest.mark.parametrize("cls", [PlackettLuceRouter, ClassifierRouter, SimilarityRouter, ReinforceSelector])
def test_routers_save_push_and_load_back_as_their_class(toy, cls, tmp_path, hub):
    train, test, _, encoder = toy
    router = cls(TEACHERS, encoder)
    if cls is ReinforceSelector:  # trained with a student; random weights stand in, so the round trip is seen
        torch.nn.init.normal_(router.policy.weight)
    else:
        router.fit(train, epochs=3) if cls is not PlackettLuceRouter else router.fit(train)
    repo = f"tester/router-{cls.method}"
    router.push_to_hub(repo)
    pulled = load_router(repo)
    assert type(pulled) is cls and pulled.teachers == TEACHERS
    assert pulled.purify(test)["purified_teacher"] == router.purify(test)["purified_teacher"]
    state, pulled_state = router.state_dict(), pulled.state_dict()
    assert all(torch.equal(state[k], pulled_state[k]) for k in state)
    (tmp_path / "config.json").write_text(json.dumps({"method": "gpt"}))
    with pytest.raises(ValueError, match="not an hf-know router"):
        load_router(tmp_path)


def test_single_teacher_and_missing_rationales_are_skipped_and_counted(toy, caplog):
    train, *_ = toy
    with caplog.at_level(logging.INFO):
        purified = SingleTeacher(TEACHERS, "multiplier").purify(train)
    assert purified["rationale"].count("") == 12 and set(purified["purified_teacher"]) == {"multiplier", ""}
    assert "lack of a rationale: {'multiplier': 12}" in caplog.text
    with pytest.raises(ValueError, match="not one of the data's teachers"):
        SingleTeacher(TEACHERS, "gpt-4")


def test_reinforce_selector_samples_only_available_teachers(toy):
    *_, encoder = toy
    selector = ReinforceSelector(TEACHERS, encoder)
    states = torch.randn(64, 2, 2 * encoder.dim)
    available = torch.ones(64, 2, dtype=torch.bool)
    available[::2, 1] = False
    choice, actions = selector.sample(states, available, torch.Generator().manual_seed(0))
    assert (choice[::2] == 0).all() and set(choice[1::2].tolist()) == {0, 1} and not actions[::2, 1].any()
    # zero-initialised policy: every action has probability 1/2
    assert torch.allclose(selector.log_prob(states, actions, available), available.sum(1) * math.log(0.5))
    with pytest.raises(TypeError, match="trained jointly"):
        selector.fit(toy[0])


# ---- aggregation ---------------------------------------------------------------------------------------------------
class ChatServer(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        reply = {"choices": [{"message": {"content": f"merged {prompt.count('Teacher ')} rationales"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_aggregation_through_an_openai_compatible_endpoint_and_a_local_model(toy):
    train, _, tokenizer, _ = toy
    rows = train.select(range(8))
    server = HTTPServer(("127.0.0.1", 0), ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        purified = AggregationPurifier(TEACHERS, endpoint=url).purify(rows)
    finally:
        server.shutdown()
    # row 7 lacks the multiplier's rationale: the aggregator sees one
    assert purified["rationale"] == ["merged 2 rationales"] * 7 + ["merged 1 rationales"]
    assert set(purified["purified_teacher"]) == {"aggregate"}
    with pytest.raises(ValueError, match=r"endpoint http://127.0.0.1:9/v1/chat/completions gave no"):
        AggregationPurifier(TEACHERS, endpoint="http://127.0.0.1:9/v1").purify(rows)
    local = AggregationPurifier(TEACHERS, tiny_llama(len(tokenizer)), tokenizer, max_new_tokens=4).purify(rows)
    assert all(isinstance(r, str) for r in local["rationale"]) and local["purified_reason"][0].startswith("aggregation")
    with pytest.raises(ValueError, match="either as a local model"):
        AggregationPurifier(TEACHERS)


# ---- rationale generation ------------------------------------------------------------------------------------------
def test_generate_rationales_runs_each_teacher_forced_and_unforced(toy):
    train, _, tokenizer, _ = toy
    rows = train.select(range(6)).select_columns(["id", "question", "choices", "answer"])
    examples = [{**train[i], "rationale": train[i]["rationales"][0]} for i in range(10, 14)]
    prompt = teacher_forced_prompt(rows[0], examples[:2])
    assert prompt.count("Rationale: Let's think step by step.") == 3 and examples[1]["rationale"] in prompt
    letter = "abcd"[rows[0]["choices"].index(rows[0]["answer"])]
    assert f"Answer: ({letter}) {rows[0]['answer']}\nRationale" in prompt.split("\n\n")[-1]
    assert answer_prompt(rows[0]).endswith("\nAnswer:") and "Rationale" not in answer_prompt(rows[0])
    assert parse_answer("I pick (b) because", ["x", "y"]) == "y" and parse_answer("it is y", ["x", "y"]) == "y"
    assert parse_answer("no idea", ["x", "y"]) == ""
    teachers = {"llama": (tiny_llama(len(tokenizer)), tokenizer), "t5": (tiny_t5(len(tokenizer)), tokenizer)}
    data = generate_rationales(rows, teachers, examples, max_new_tokens=6)
    assert len(data) == 6 and all(len(r) == 2 for r in data["rationales"])
    assert all(
        a in ("", *c) for answers, c in zip(data["teacher_answers"], data["choices"], strict=True) for a in answers
    )
    with pytest.raises(ValueError, match="at least 2 in-context examples"):
        generate_rationales(rows, teachers, examples[:1])


# ---- metrics and configs -------------------------------------------------------------------------------------------
def test_cmv_metric():
    metric = hf_know.metrics.load("cmv")
    assert metric.compute(predictions=[0.56, 0.55], references=[0.53, 0.54])["cmv"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        metric.compute(predictions=[0.5, 0.4], references=[0.4, 0.3, 0.2])


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    names = {p.stem for p in (REPO_ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert {"cpu_2proc", "single_gpu", "multi_gpu", "fsdp", "zero2", "zero3"} <= names
    for name in names:
        path = REPO_ROOT / "configs" / "accelerate" / f"{name}.yaml"
        loaded = load_config_from_file(str(path))
        assert loaded.distributed_type.value == yaml.safe_load(path.read_text())["distributed_type"]
