"""Task signatures and parameter-free retrieval on synthetic task embeddings with known structure."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from hf_know.cluster_retrieval import SIGNATURE_TYPES, cluster_separation, fit_signature, retrieve

D, TASKS = 16, 5


def task_stream(separation: float, n: int = 200, seed: int = 0):
    """Per task: a mixture of two Gaussian blobs around a task center `separation` apart from the others."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(TASKS, D, generator=generator)
    centers = separation * centers / centers.norm(dim=-1, keepdim=True)
    tasks = []
    for center in centers:
        offsets = 0.5 * torch.randn(2, D, generator=generator)
        blob = torch.randint(0, 2, (n,), generator=generator)
        tasks.append(center + offsets[blob] + torch.randn(n, D, generator=generator))
    return tasks


def retrieval_accuracy(train, test, **kwargs) -> float:
    signatures = [fit_signature(t, **kwargs.pop("fit", {})) for t in train]
    features = torch.cat(test)
    truth = torch.cat([torch.full((len(t),), i) for i, t in enumerate(test)])
    predicted, _ = retrieve(features, signatures, **kwargs)
    return float((predicted == truth).float().mean())


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full"])
@pytest.mark.parametrize("kind", [GaussianMixture, BayesianGaussianMixture])
def test_log_likelihood_is_the_fitted_mixture_density(kind, covariance_type):
    """Checked against an independent SciPy density of the mixture sklearn fitted (for the Dirichlet-process
    mixture: its posterior-mean weights, means and covariances, a proper density comparable across tasks)."""
    x = task_stream(3.0)[0].double()
    signature_type = "gmm" if kind is GaussianMixture else "dpgmm"
    signature = fit_signature(x, signature_type, max_components=3, covariance_type=covariance_type)
    reference = kind(
        n_components=3,
        covariance_type=covariance_type,
        reg_covar=1e-4,
        random_state=0,
        max_iter=500,
        **({"weight_concentration_prior_type": "dirichlet_process"} if kind is BayesianGaussianMixture else {}),
    ).fit(x.numpy())
    to_matrix = {"full": lambda c: c, "diag": np.diag, "spherical": lambda c: c * np.eye(D)}[covariance_type]
    covariances = [to_matrix(c) for c in reference.covariances_]
    density = sum(
        w * multivariate_normal(mean, cov).pdf(x.numpy())
        for w, mean, cov in zip(reference.weights_, reference.means_, covariances, strict=True)
    )
    np.testing.assert_allclose(signature.log_likelihood(x).numpy(), np.log(density), rtol=1e-8)


@pytest.mark.parametrize("signature_type", SIGNATURE_TYPES)
@pytest.mark.parametrize("rule", ["max_loglik", "nearest_centroid", "soft"])
def test_well_separated_tasks_are_retrieved(signature_type, rule):
    train, test = task_stream(12.0, seed=0), task_stream(12.0, seed=0, n=400)[:]
    test = [t[200:] for t in test]  # held-out draws of the same tasks
    kwargs = {"top_k": 2, "temperature": 2.0} if rule == "soft" else {}
    fit = {"signature_type": signature_type}
    if signature_type == "class_gaussian":
        fit["labels"] = torch.zeros(len(train[0]))  # one class per task: a single shrunk Gaussian
    assert retrieval_accuracy(train, test, rule=rule, fit=fit, **kwargs) >= 0.99


def test_retrieval_degrades_as_clusters_overlap_and_separation_tracks_it():
    accuracies, separations = [], []
    for separation in (12.0, 4.0, 2.0, 0.5):
        stream = task_stream(separation, n=400, seed=1)
        train, test = [t[:200] for t in stream], [t[200:] for t in stream]
        accuracies.append(retrieval_accuracy(train, test, fit={"signature_type": "dpgmm"}))
        separations.append(cluster_separation(train))
    # each task keeps its own blob structure, so even overlapping centers stay above chance (0.2)
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[0] >= 0.99 and accuracies[-1] < 0.8
    assert separations == sorted(separations, reverse=True)


def test_dpgmm_infers_the_number_of_components():
    x = task_stream(3.0, n=600)[0]  # two blobs
    signature = fit_signature(x, "dpgmm", max_components=10)
    assert int((signature.weights > 0.05).sum()) <= 3 and signature.weights.sum().item() == pytest.approx(1.0)


def test_task_adapted_features_and_soft_weights():
    train = task_stream(12.0)
    signatures = [fit_signature(t, "centroid") for t in train]
    # task-adapted retrieval: one feature matrix per task; here only task 2's view makes inputs look like task 2
    query = train[2][:10]
    far = [query + 100.0] * TASKS
    far[2] = query
    predicted, _ = retrieve(far, signatures)
    assert (predicted == 2).all()
    predicted, weights = retrieve(query, signatures, rule="soft", top_k=2)
    assert torch.allclose(weights.sum(-1), torch.ones(10, dtype=weights.dtype))
    assert ((weights > 0).sum(-1) <= 2).all() and (weights.argmax(-1) == predicted).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_signature(torch.empty(0, D)), r"with N >= 2 examples .* got shape \(0, 16\)"),
        (lambda: fit_signature(torch.ones(1, D)), r"with N >= 2 examples .* got shape \(1, 16\)"),
        (lambda: fit_signature(torch.full((4, D), float("nan"))), "non-finite features"),
        (lambda: fit_signature(torch.randn(4, D), "hdbscan"), "signature_type must be one of"),
        (lambda: fit_signature(torch.randn(4, D), covariance_type="tied"), "covariance_type must be one of"),
        (lambda: fit_signature(torch.randn(4, D), max_components=0), "max_components must be >= 1"),
        (
            lambda: fit_signature(torch.randn(8, D)).log_likelihood(torch.randn(3, 8)),
            r"fitted on 16-dimensional .* \[N, 16\]",
        ),
        (lambda: retrieve(torch.randn(3, D), []), "at least one task signature"),
        (lambda: retrieve(torch.randn(3, D), [fit_signature(torch.randn(8, D))], rule="vote"), "rule must be one of"),
        (lambda: retrieve(torch.randn(3, D), [fit_signature(torch.randn(8, D))], rule="soft", top_k=2), "top_k <= 1"),
        (
            lambda: retrieve([torch.randn(3, D)] * 2, [fit_signature(torch.randn(8, D))]),
            "2 per-task feature matrices for 1",
        ),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_lda_head_matches_sklearn_linear_discriminant_analysis():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from hf_know.cluster_retrieval.head import fit_lda, lda_scores

    generator = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(3, 6, generator=generator)
    labels = torch.arange(3).repeat_interleave(40) + 5  # label ids need not start at 0
    features = centres[labels - 5] + torch.randn(120, 6, generator=generator)
    classes, means, precision = fit_lda(features, labels, shrinkage=0.0)
    assert classes == [5, 6, 7]
    ours = torch.tensor(classes)[lda_scores(features, means, precision).argmax(-1)]
    reference = LinearDiscriminantAnalysis(solver="lsqr").fit(features.numpy(), labels.numpy())
    assert ours.tolist() == reference.predict(features.numpy()).tolist()
    torch.testing.assert_close(means, torch.from_numpy(reference.means_).double(), rtol=1e-5, atol=1e-5)


def test_class_gaussian_is_the_shrunk_per_class_density_and_needs_labels():
    """One Ledoit-Wolf Gaussian per class, weighted by frequency: checked against SciPy's density of sklearn's
    estimate; and two tasks whose classes share their means but not their shapes are told apart by it, where one
    Gaussian per task (`centroid`) cannot."""
    from sklearn.covariance import LedoitWolf

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0] * 80 + [1] * 40)
    x[labels == 1] += 3.0
    signature = fit_signature(x, "class_gaussian", max_components=2, labels=labels, reg_covar=1e-6)
    expected = 0.0
    for c, weight in ((0, 80 / 120), (1, 40 / 120)):
        estimate = LedoitWolf().fit(x[labels == c].numpy())
        cov = estimate.covariance_ + 1e-6 * np.eye(4)
        expected = expected + weight * multivariate_normal(estimate.location_, cov).pdf(x[:5].numpy())
    torch.testing.assert_close(signature.log_likelihood(x[:5]), torch.as_tensor(np.log(expected)))
    # same means and per-dimension variances, opposite correlations: only full covariances separate the tasks
    stretch = torch.diag(torch.tensor([2.0, 0.3, 1.0, 1.0], dtype=torch.float64))
    turn = torch.eye(4, dtype=torch.float64)
    turn[:2, :2] = torch.tensor([[1.0, 1.0], [-1.0, 1.0]]) / 2**0.5
    shapes = (stretch @ turn, stretch @ turn.T)
    tasks = [torch.randn(400, 4, generator=generator, dtype=torch.float64) @ m for m in shapes]
    task_labels = [torch.arange(400) % 2] * 2
    train, test = [t[:300] for t in tasks], [t[300:] for t in tasks]
    for kind, floor in (("class_gaussian", 0.8), ("centroid", None)):
        signatures = [
            fit_signature(t, kind, max_components=2, labels=y[:300]) for t, y in zip(train, task_labels, strict=True)
        ]
        found, _ = retrieve(torch.cat(test), signatures)
        accuracy = float((found == torch.tensor([0] * 100 + [1] * 100)).double().mean())
        assert accuracy > floor if floor else accuracy < 0.65  # diagonal variances are alike: near chance
    with pytest.raises(ValueError, match="needs one label per embedding"):
        fit_signature(x, "class_gaussian")
    with pytest.raises(ValueError, match=r"got 2 classes \(at most max_components=1\)"):
        fit_signature(x, "class_gaussian", max_components=1, labels=labels)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_stacked_signatures_score_every_task_in_one_pass_as_each_alone(covariance_type):
    """Signatures with different numbers of components, padded and stacked: the same log-likelihoods as scoring
    each task on its own (float64 exactly; float32 within its precision)."""
    from hf_know.cluster_retrieval.signatures import StackedSignatures

    tasks = task_stream(separation=4.0)
    signatures = [
        fit_signature(x.double(), "gmm", max_components=1 + i % 3, covariance_type=covariance_type)
        for i, x in enumerate(tasks)
    ]
    assert len({s.weights.shape[0] for s in signatures}) == 3
    x = torch.cat(tasks)[::7].double()
    each = torch.stack([s.log_likelihood(x) for s in signatures], dim=-1)
    torch.testing.assert_close(StackedSignatures.of(signatures, torch.float64).log_likelihood(x), each)
    single = StackedSignatures.of(signatures).log_likelihood(x.float())
    torch.testing.assert_close(single.double(), each, rtol=1e-5, atol=1e-3)
    assert torch.equal(retrieve(x, signatures)[0], each.argmax(-1))
