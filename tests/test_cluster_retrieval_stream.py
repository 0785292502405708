"""The task-stream helpers: the class-incremental protocol (masked training loss, prediction among a task's classes)
and a whole stream run through `run_task_stream`."""

import pytest
import torch
from peft import get_peft_model
from transformers import TrainingArguments, set_seed

import hf_know
from hf_know.cluster_retrieval.stream import (
    class_masked_loss,
    evaluate_task,
    predict_among,
    run_task_stream,
    split_into_tasks,
    task_classes,
    train_task,
)
from hf_know.image_data import digits_task_stream, load_fashion_mnist
from hf_know.testing import tiny_vit


def stream_model(num_labels: int = 4):
    set_seed(0)
    config = hf_know.ClusterRetrievalAdapterConfig(target_modules=["q_proj", "v_proj", "classifier"], r=4)
    return get_peft_model(tiny_vit(num_labels), config)


def args(tmp_path) -> TrainingArguments:
    return TrainingArguments(
        tmp_path, num_train_epochs=8, per_device_train_batch_size=8, learning_rate=0.01, report_to=[], use_cpu=True
    )


def test_predict_among_restricts_the_argmax_to_the_given_classes():
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.0, 3.0, 1.0, 9.0]])
    assert predict_among(logits, None).tolist() == [0, 3]
    assert predict_among(logits, [2, 3]).tolist() == [2, 3]
    assert predict_among(logits, [1, 2]).tolist() == [2, 1]


def test_class_masked_loss_is_cross_entropy_over_the_task_classes_plus_the_penalties():
    model = stream_model()
    model.add_task("a")
    logits = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([2, 3, 2])
    loss = class_masked_loss(model, [2, 3])(type("Out", (), {"logits": logits})(), labels)
    expected = torch.nn.functional.cross_entropy(logits[:, 2:], labels - 2) + model.regularization_loss()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[:, :2].abs().sum() == 0  # classes outside the task get no gradient


def test_masked_training_leaves_other_classes_classifier_rows_untouched(tmp_path):
    train = digits_task_stream([[0, 1], [2, 3]], train_per_class=10)[0]["train"]
    assert task_classes(train) == [0, 1]
    touched = {}
    for masked in (True, False):
        model = stream_model()
        model.add_task("digits_0_1")
        train_task(model, train, args(tmp_path), classes=[0, 1] if masked else None)
        classifier = model.base_model.model.classifier
        touched[masked] = classifier.cr_B["default"]["digits_0_1"][2:].abs().sum().item()
    assert touched[True] == 0.0 and touched[False] > 0.0


def test_class_incremental_stream_predicts_among_the_retrieved_tasks_classes(tmp_path):
    stream = digits_task_stream([[0, 1], [2, 3]], train_per_class=20)
    tasks = [(f"t{j}", data["train"], data["test"]) for j, data in enumerate(stream)]
    model = stream_model()
    result = run_task_stream(model, tasks, args(tmp_path), class_incremental=True)
    assert [len(row) for row in result.accuracy] == [1, 2]
    classes = [[0, 1], [2, 3]]
    for j, (_, _, test) in enumerate(tasks):
        batch = {"pixel_values": torch.stack(list(test["pixel_values"]))}
        labels = torch.as_tensor(test["labels"])
        retrieved, _ = model.retrieve(**batch)
        routed = model(**batch, adapter_names=retrieved.tolist()).logits
        per_task = torch.stack([predict_among(routed, group) for group in classes])
        predicted = per_task[retrieved, torch.arange(len(labels))]
        oracle = predict_among(model(**batch, adapter_names=[j] * len(labels)).logits, classes[j])
        row = evaluate_task(model, test, j, classes=classes)
        assert row["accuracy"] == pytest.approx((predicted == labels).float().mean().item())
        assert row["oracle_accuracy"] == pytest.approx((oracle == labels).float().mean().item())
        final = {metric: getattr(result, metric)[-1][j] for metric in row}
        assert row == pytest.approx(final)
    assert result.metrics()["oracle_acc"] > 0.65  # above chance (0.5): each task learns its own two digits


def test_split_into_tasks_keeps_labels_and_the_image_transform(fashion_dir):
    order = [7, 2, 9, 0, 4, 1]
    data = load_fashion_mnist(order, image_size=8, train_per_class=3, test_per_class=2, data_dir=fashion_dir)
    stream = split_into_tasks(data, [2, 3, 1])
    assert [task_classes(task["train"]) for task in stream] == [[0, 1], [2, 3, 4], [5]]
    assert [len(task["test"]) for task in stream] == [4, 6, 2]
    row = stream[1]["train"][0]  # the on-access transform still makes pixel_values, and images match labels
    assert row["pixel_values"].shape == (1, 8, 8) and row["labels"] in (2, 3, 4)
    with pytest.raises(ValueError, match=r"add up to the dataset's 6 labels"):
        split_into_tasks(data, [2, 2])
