"""Batch miners against loops written from the authors' batchminer/<name>.py: which tuples each may give, and the
distribution it draws them from (frequencies over many draws of its seeded generator)."""
import collections
import math

import pytest
import torch

from criteria.miners import MODULES, TRIPLET_MINERS, build
from criteria.miners.distance import DistanceMiner, distance_weighted_triplets, negative_sampling_probabilities
from criteria.miners.intra_random import intra_random_triplets
from criteria.miners.lifted import lifted_tuples
from criteria.miners.npair import npair_tuples
from criteria.miners.random import random_triplets
from criteria.miners.random_distance import random_distance_triplets
from criteria.miners.rho_distance import rho_distance_triplets
from criteria.miners.semihard import semihard_triplets
from criteria.miners.softhard import softhard_triplets
from criteria_references import distance, random_batch, triplet_list

# A batch with a class of three, pairs, and a class alone (sample 5).
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])


def batch(dim=6, seed=7):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(len(LABELS), dim, generator=generator, dtype=torch.float64)
    return points / points.norm(dim=1, keepdim=True)


def frequencies(draw, times):
    """{tuple: share of all tuples drawn} over `times` calls of `draw`, and the tuples' counts per call."""
    counts, sizes = collections.Counter(), collections.Counter()
    for _ in range(times):
        tuples = triplet_list(draw())
        sizes[len(tuples)] += 1
        counts.update(tuples)
    total = sum(counts.values())
    return {key: count / total for key, count in counts.items()}, sizes


def assert_follows(observed, expected, draws):
    """Observed shares against expected probabilities (same support), within 5 binomial standard errors."""
    assert set(observed) <= set(expected), set(observed) - set(expected)
    for key, probability in expected.items():
        error = 5 * math.sqrt(probability * (1 - probability) / draws) + 1e-9
        assert abs(observed.get(key, 0.0) - probability) <= error, (key, observed.get(key, 0.0), probability)


def others(labels, a, same):
    return [j for j in range(len(labels)) if j != a and (labels[j] == labels[a]) == same]


# ---- distance (the authors' default) -------------------------------------------------------------------------------

def sampling_probabilities_reference(x, labels, lower_cutoff, upper_cutoff=None):
    """Their inverse_sphere_distances: weight 1/q(max(d, lower_cutoff)) on the other classes' samples; the upper
    cutoff (commented out there) only where given, with a uniform fallback where it leaves no candidate."""
    dim = x.shape[1]
    labels = labels.tolist()
    rows = []
    for a in range(len(labels)):
        negatives = others(labels, a, same=False)
        weights = [0.0] * len(labels)
        for n in negatives:
            d = distance(x, a, n).item()
            if upper_cutoff is None or d < upper_cutoff:
                clipped = max(d, lower_cutoff)
                weights[n] = 1.0 / (clipped ** (dim - 2) * (1 - clipped ** 2 / 4) ** ((dim - 3) / 2))
        if sum(weights) == 0:
            weights = [1.0 if n in negatives else 0.0 for n in range(len(labels))]
        total = sum(weights)
        rows.append([w / total if total else 0.0 for w in weights])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize('dim, lower_cutoff, upper_cutoff', [(16, 0.5, None), (4, 0.5, None), (16, 1.2, None),
                                                              (16, 0.5, 1.4), (16, 1.2, 1.45)])
def test_negative_sampling_probabilities_match_formula(dim, lower_cutoff, upper_cutoff):
    embeddings, labels = random_batch(4, 4, dim=dim, seed=5)
    probabilities = negative_sampling_probabilities(embeddings, labels, lower_cutoff, upper_cutoff)
    expected = sampling_probabilities_reference(embeddings.detach(), labels, lower_cutoff, upper_cutoff)
    torch.testing.assert_close(probabilities.double(), expected, rtol=1e-9, atol=1e-15)


def test_upper_cutoff_falls_back_to_uniform_negatives():
    embeddings, labels = random_batch(4, 4, seed=5)
    probabilities = negative_sampling_probabilities(embeddings, labels, 0.5, upper_cutoff=0.0)
    negatives = labels[:, None] != labels[None, :]
    torch.testing.assert_close(probabilities.double(), negatives.double() / negatives.sum(dim=1, keepdim=True))


def test_the_upper_cutoff_applies_only_when_asked_for():
    assert DistanceMiner(upper_cutoff=1.4).upper_cutoff is None
    assert DistanceMiner(upper_cutoff=1.4, apply_upper_cutoff=True).upper_cutoff == 1.4


def test_distance_miner_draws_every_anchor_positive_itself_if_alone_and_weighted_negatives():
    """Their distance miner: every anchor; the positive uniform among its class's others, the anchor itself where
    its class has one sample; the negative from the 1/q(d) weights, no upper cutoff."""
    embeddings, draws = batch(), 3000
    probabilities = sampling_probabilities_reference(embeddings, LABELS, 0.5)
    labels = LABELS.tolist()
    expected = {}
    for a in range(len(labels)):
        positives = others(labels, a, same=True) or [a]
        for p in positives:
            for n in others(labels, a, same=False):
                expected[(a, p, n)] = probabilities[a, n].item() / len(positives) / len(labels)
    generator = torch.Generator().manual_seed(0)
    observed, sizes = frequencies(lambda: distance_weighted_triplets(embeddings, LABELS, generator=generator), draws)
    assert sizes == {len(labels): draws}
    assert_follows(observed, expected, draws * len(labels))


# ---- semihard (FaceNet), softhard ----------------------------------------------------------------------------------

def semihard_reference(x, labels, margin):
    """{(a, p): [its semi-hard negatives]}: d_ap < d_an < d_ap + margin, for every positive pair."""
    labels = labels.tolist()
    candidates = {}
    for a in range(len(labels)):
        for p in others(labels, a, same=True):
            d_ap = distance(x, a, p).item()
            found = [n for n in others(labels, a, same=False) if d_ap < distance(x, a, n).item() < d_ap + margin]
            if found:
                candidates[(a, p)] = found
    return candidates


@pytest.mark.parametrize('margin', [0.2, 0.5])
def test_semihard_draws_a_uniform_semihard_negative_for_every_positive_pair_that_has_one(margin):
    embeddings, labels = random_batch(4, 4, seed=2)
    candidates = semihard_reference(embeddings.detach(), labels, margin)
    assert candidates and len(candidates) < 4 * 4 * 3, 'the batch has pairs with and without semi-hard negatives'
    draws = 2000
    expected = {(a, p, n): 1 / len(found) / len(candidates) for (a, p), found in candidates.items() for n in found}
    generator = torch.Generator().manual_seed(1)
    observed, sizes = frequencies(lambda: semihard_triplets(embeddings, labels, margin, generator=generator), draws)
    assert sizes == {len(candidates): draws}
    assert_follows(observed, expected, draws * len(candidates))


def test_semihard_without_candidates_is_empty():
    embeddings, labels = random_batch(4, 4, seed=0)
    assert all(len(index) == 0 for index in semihard_triplets(embeddings, labels, margin=0.0))


def test_softhard_draws_from_the_hard_sets_else_from_all():
    """Their softhard: anchors with another same-class sample; negatives closer than the farthest positive,
    positives farther than the closest negative, each drawn uniformly from the hard set where it is not empty."""
    embeddings, draws, labels = batch(), 3000, LABELS.tolist()
    expected = {}
    anchors = [a for a in range(len(labels)) if others(labels, a, same=True)]
    for a in anchors:
        positives, negatives = others(labels, a, same=True), others(labels, a, same=False)
        farthest = max(distance(embeddings, a, p).item() for p in positives)
        closest = min(distance(embeddings, a, n).item() for n in negatives)
        hard_p = [p for p in positives if distance(embeddings, a, p).item() > closest] or positives
        hard_n = [n for n in negatives if distance(embeddings, a, n).item() < farthest] or negatives
        for p in hard_p:
            for n in hard_n:
                expected[(a, p, n)] = 1 / len(hard_p) / len(hard_n) / len(anchors)
    generator = torch.Generator().manual_seed(2)
    observed, sizes = frequencies(lambda: softhard_triplets(embeddings, LABELS, generator=generator), draws)
    assert sizes == {len(anchors): draws}
    assert_follows(observed, expected, draws * len(anchors))


# ---- rho_distance, random_distance ---------------------------------------------------------------------------------

def test_rho_distance_pushes_a_positive_away_with_probability_cp():
    """Their rho_distance: anchors with another same-class sample; with probability cp the triplet (a, a, p), else
    (a, p, n) with n distance-weighted (lower cutoff, no upper)."""
    embeddings, labels, draws, cp = batch(), LABELS.tolist(), 3000, 0.3
    probabilities = sampling_probabilities_reference(embeddings, LABELS, 0.5)
    anchors = [a for a in range(len(labels)) if others(labels, a, same=True)]
    expected = collections.Counter()
    for a in anchors:
        positives = others(labels, a, same=True)
        for p in positives:
            expected[(a, a, p)] += cp / len(positives) / len(anchors)
            for n in others(labels, a, same=False):
                expected[(a, p, n)] += (1 - cp) * probabilities[a, n].item() / len(positives) / len(anchors)
    generator = torch.Generator().manual_seed(3)
    observed, sizes = frequencies(
        lambda: rho_distance_triplets(embeddings, LABELS, push_probability=cp, generator=generator), draws)
    assert sizes == {len(anchors): draws}
    assert_follows(observed, dict(expected), draws * len(anchors))


def test_random_distance_mines_with_shuffled_labels():
    """Their random_distance: the labels permuted at random, then distance-weighted triplets of the anchors that
    have a partner under the permuted labels: the tuples are valid for the permuted labels, not the true ones."""
    embeddings = batch()
    generator, replay = torch.Generator().manual_seed(4), torch.Generator()
    truly_positive = 0
    for _ in range(200):
        replay.set_state(generator.get_state())
        anchors, positives, negatives = random_distance_triplets(embeddings, LABELS, generator=generator)
        shuffled = LABELS[torch.randperm(len(LABELS), generator=replay)]
        with_partner = [a for a in range(len(LABELS)) if (shuffled == shuffled[a]).sum() > 1]
        assert anchors.tolist() == with_partner
        assert torch.all(shuffled[positives] == shuffled[anchors]) and torch.all(positives != anchors)
        assert torch.all(shuffled[negatives] != shuffled[anchors])
        truly_positive += int((LABELS[positives] == LABELS[anchors]).sum())
    assert truly_positive < 0.5 * 200 * 7  # shuffled labels: few true positives


# ---- random, intra_random ------------------------------------------------------------------------------------------

def all_triplets(labels):
    labels = labels.tolist()
    return [(a, p, n) for a in range(len(labels)) for p in others(labels, a, same=True)
            for n in others(labels, a, same=False)]


def test_random_draws_batch_size_distinct_triplets_uniformly():
    """Their random: random.sample(all valid triplets, batch size): distinct, each valid triplet equally likely."""
    valid, draws = all_triplets(LABELS), 3000
    generator = torch.Generator().manual_seed(5)
    counts = collections.Counter()
    for _ in range(draws):
        drawn = triplet_list(random_triplets(LABELS, generator=generator))
        assert len(drawn) == len(LABELS) == len(set(drawn)) and set(drawn) <= set(valid)
        counts.update(drawn)
    assert_follows({key: count / draws for key, count in counts.items()},
                   {key: len(LABELS) / len(valid) for key in valid}, draws)


def test_random_gives_every_triplet_where_there_are_fewer_than_the_batch():
    labels = torch.tensor([0, 0, 1])
    drawn = triplet_list(random_triplets(labels, generator=torch.Generator().manual_seed(0)))
    assert sorted(drawn) == [(0, 1, 2), (1, 0, 2)]


def test_intra_random_takes_all_three_from_one_class_drawn_uniformly_among_classes():
    draws, labels = 3000, LABELS.tolist()
    classes = sorted(set(labels))
    expected = collections.Counter()
    for c in classes:
        members = [i for i in range(len(labels)) if labels[i] == c]
        for a in members:
            for p in members:
                for n in members:
                    expected[(a, p, n)] += 1 / len(classes) / len(members) ** 3
    generator = torch.Generator().manual_seed(6)
    observed, sizes = frequencies(lambda: intra_random_triplets(LABELS, generator=generator), draws)
    assert sizes == {len(labels): draws}
    assert_follows(observed, dict(expected), draws * len(labels))


# ---- npair, lifted -------------------------------------------------------------------------------------------------

def test_npair_one_uniform_positive_and_every_other_class_sample():
    draws, labels = 3000, LABELS.tolist()
    anchors = [a for a in range(len(labels)) if others(labels, a, same=True)]
    generator = torch.Generator().manual_seed(7)
    counts = collections.Counter()
    for _ in range(draws):
        drawn_anchors, positives, negatives = npair_tuples(LABELS, generator=generator)
        assert drawn_anchors.tolist() == anchors
        assert [row.nonzero().flatten().tolist() for row in negatives] == [others(labels, a, same=False)
                                                                           for a in anchors]
        counts.update(zip(drawn_anchors.tolist(), positives.tolist()))
    expected = {(a, p): 1 / len(others(labels, a, same=True)) for a in anchors for p in others(labels, a, True)}
    assert_follows({key: count / draws for key, count in counts.items()}, expected, draws)


def test_lifted_every_anchor_with_its_positive_and_negative_sets():
    anchors, positives, negatives = lifted_tuples(LABELS)
    labels = LABELS.tolist()
    assert anchors.tolist() == [a for a in range(len(labels)) if others(labels, a, same=True)]
    for a, positive_row, negative_row in zip(anchors.tolist(), positives, negatives):
        assert positive_row.nonzero().flatten().tolist() == others(labels, a, same=True)
        assert negative_row.nonzero().flatten().tolist() == others(labels, a, same=False)


# ---- all miners ----------------------------------------------------------------------------------------------------

class Flags:
    miner_distance_lower_cutoff = 0.5
    miner_distance_upper_cutoff = 1.4
    miner_distance_apply_upper_cutoff = False
    miner_rho_distance_lower_cutoff = 0.5
    miner_rho_distance_cp = 0.2


@pytest.mark.parametrize('name', list(MODULES))
def test_a_miner_restored_from_the_criterions_state_mines_what_the_original_would(name):
    embeddings = batch()
    miner = build(name, Flags, seed=3, loss_options={})
    miner(embeddings, LABELS)
    state = miner.state_dict()
    expected = miner(embeddings, LABELS)
    restored = build(name, Flags, seed=99, loss_options={})
    restored.load_state_dict(state)
    for ours, theirs in zip(restored(embeddings, LABELS), expected):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize('name', TRIPLET_MINERS)
def test_triplet_miners_give_nothing_for_a_batch_of_one_class_except_intra_random(name):
    labels = torch.zeros(6, dtype=torch.long)
    anchors, positives, negatives = build(name, Flags, seed=0, loss_options={})(batch()[:6], labels)
    if name == 'intra_random':
        assert len(anchors) == 6
    else:
        assert len(anchors) == len(positives) == len(negatives) == 0
