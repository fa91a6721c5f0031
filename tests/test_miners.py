"""Triplet miners: semi-hard against a brute-force loop, distance-weighted by its properties and weights."""
import pytest
import torch

from criteria.miners.distance import distance_weighted_triplets, negative_sampling_probabilities
from criteria.miners.semihard import semihard_triplets
from criteria_references import distance, random_batch


def semihard_reference(x, labels, margin):
    labels = labels.tolist()
    triplets = []
    for a in range(len(labels)):
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = distance(x, a, p).item()
            semihard = [(distance(x, a, n).item(), n) for n in range(len(labels))
                        if labels[n] != labels[a] and d_ap < distance(x, a, n).item() < d_ap + margin]
            if semihard:
                triplets.append((a, p, min(semihard)[1]))
    return triplets


def as_triplets(indices):
    return list(zip(*(index.tolist() for index in indices)))


@pytest.mark.parametrize('n_classes, per_class, seed, margin', [(8, 2, 0, 0.2), (4, 4, 1, 0.2), (4, 4, 2, 0.5)])
def test_semihard_matches_brute_force(n_classes, per_class, seed, margin):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    triplets = as_triplets(semihard_triplets(embeddings, labels, margin))
    assert triplets
    assert triplets == semihard_reference(embeddings.detach(), labels, margin)
    for a, p, n in triplets:
        d_ap, d_an = distance(embeddings, a, p).item(), distance(embeddings, a, n).item()
        assert labels[a] == labels[p] and a != p and labels[a] != labels[n]
        assert d_ap < d_an < d_ap + margin


def test_semihard_without_candidates_is_empty():
    embeddings, labels = random_batch(4, 4, seed=0)
    anchors, positives, negatives = semihard_triplets(embeddings, labels, margin=0.0)
    assert len(anchors) == len(positives) == len(negatives) == 0


def sampling_probabilities_reference(x, labels, lower_cutoff, upper_cutoff):
    """1/q(max(d, lower_cutoff)) over other-class samples with d < upper_cutoff, normalised per row."""
    dim = x.shape[1]
    labels = labels.tolist()
    rows = []
    for a in range(len(labels)):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        weights = [0.0] * len(labels)
        for n in negatives:
            d = distance(x, a, n).item()
            if d < upper_cutoff:
                clipped = max(d, lower_cutoff)
                weights[n] = 1.0 / (clipped ** (dim - 2) * (1 - clipped ** 2 / 4) ** ((dim - 3) / 2))
        if sum(weights) == 0:
            weights = [1.0 if n in negatives else 0.0 for n in range(len(labels))]
        total = sum(weights)
        rows.append([w / total if total else 0.0 for w in weights])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize('dim, lower_cutoff, upper_cutoff', [(16, 0.5, 1.4), (4, 0.5, 1.4), (16, 1.2, 1.45)])
def test_negative_sampling_probabilities_match_formula(dim, lower_cutoff, upper_cutoff):
    embeddings, labels = random_batch(4, 4, dim=dim, seed=5)
    probabilities = negative_sampling_probabilities(embeddings, labels, lower_cutoff, upper_cutoff)
    expected = sampling_probabilities_reference(embeddings.detach(), labels, lower_cutoff, upper_cutoff)
    torch.testing.assert_close(probabilities.double(), expected, rtol=1e-9, atol=1e-15)


def test_negative_sampling_falls_back_to_uniform_negatives():
    embeddings, labels = random_batch(4, 4, seed=5)
    probabilities = negative_sampling_probabilities(embeddings, labels, 0.5, upper_cutoff=0.0)
    negatives = labels[:, None] != labels[None, :]
    torch.testing.assert_close(probabilities.double(), negatives.double() / negatives.sum(dim=1, keepdim=True))


@pytest.mark.parametrize('n_classes, per_class', [(8, 2), (4, 4)])
def test_distance_weighted_triplets_properties(n_classes, per_class):
    embeddings, labels = random_batch(n_classes, per_class, seed=6)
    upper_cutoff = 1.4
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        anchors, positives, negatives = distance_weighted_triplets(
            embeddings, labels, upper_cutoff=upper_cutoff, generator=generator)
        assert anchors.tolist() == list(range(len(labels)))
        assert torch.all(labels[positives] == labels[anchors]) and torch.all(positives != anchors)
        assert torch.all(labels[negatives] != labels[anchors])
        has_close_negative = [any(labels[n] != labels[a] and distance(embeddings, a, n) < upper_cutoff
                                  for n in range(len(labels))) for a in range(len(labels))]
        for a, n in zip(anchors.tolist(), negatives.tolist()):
            assert distance(embeddings, a, n) < upper_cutoff or not has_close_negative[a]


def test_distance_weighted_frequencies_follow_probabilities():
    embeddings, labels = random_batch(2, 3, dim=4, seed=7)
    probabilities = negative_sampling_probabilities(embeddings, labels, 0.5, 1.4)
    generator = torch.Generator().manual_seed(1)
    draws = 3000
    counts = torch.zeros(len(labels), len(labels), dtype=torch.float64)
    for _ in range(draws):
        anchors, _, negatives = distance_weighted_triplets(embeddings, labels, generator=generator)
        counts[anchors, negatives] += 1
    # Binomial standard error of each frequency is at most 0.5 / sqrt(draws) < 0.01.
    torch.testing.assert_close(counts / draws, probabilities.double(), rtol=0, atol=0.05)


def test_distance_weighted_skips_anchors_without_positive_or_negative():
    embeddings, _ = random_batch(5, 1, seed=8)
    labels = torch.tensor([0, 0, 1, 2, 2])
    anchors, positives, negatives = distance_weighted_triplets(embeddings, labels)
    assert anchors.tolist() == [0, 1, 3, 4]
    assert positives.tolist() == [1, 0, 4, 3]
    single_class = distance_weighted_triplets(embeddings, torch.zeros(5, dtype=torch.long))
    assert all(len(indices) == 0 for indices in single_class)
