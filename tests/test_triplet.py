"""TripletLoss against a float64 loop of the authors' triplet.py (squared distances), on given and mined triplets."""
import pytest
import torch

from criteria.miners.distance import DistanceMiner, distance_weighted_triplets
from criteria.triplet import TripletLoss
from criteria_references import gradient, random_batch, triplet_list, triplet_reference


def all_valid_triplets(labels):
    return [(a, p, n) for a in range(len(labels)) for p in range(len(labels)) for n in range(len(labels))
            if a != p and labels[a] == labels[p] and labels[n] != labels[a]]


@pytest.mark.parametrize('n_classes, per_class, seed', [(8, 2, 0), (4, 4, 1), (4, 4, 2)])
def test_forward_matches_loop_reference_on_its_miners_triplets(n_classes, per_class, seed):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    triplets = triplet_list(distance_weighted_triplets(embeddings, labels,
                                                       generator=torch.Generator().manual_seed(seed)))
    loss, grad = gradient(lambda x: TripletLoss(margin=0.2, miner=DistanceMiner(seed=seed))(x, labels), embeddings)
    expected, expected_grad = gradient(lambda x: triplet_reference(x, triplets, 0.2), embeddings)
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_loss_for_given_triplets_includes_inactive_ones_in_the_mean():
    embeddings, labels = random_batch(4, 4, seed=2)
    triplets = all_valid_triplets(labels.tolist())
    indices = [torch.tensor(column) for column in zip(*triplets)]
    loss, grad = gradient(lambda x: TripletLoss(margin=0.3)(x, labels, indices_tuple=indices), embeddings)
    expected, expected_grad = gradient(lambda x: triplet_reference(x, triplets, 0.3), embeddings)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_distances_are_squared():
    """|a - p|² - |a - n|² + margin, as the authors: 1 - 4 + 4 = 1 here (plain distances would give 1 - 2 + 4)."""
    embeddings = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    triplet = [torch.tensor([0]), torch.tensor([1]), torch.tensor([2])]
    loss = TripletLoss(margin=4.0)(embeddings, torch.tensor([0, 0, 1]), indices_tuple=triplet)
    assert loss.item() == pytest.approx(1.0)


def test_no_triplets_gives_zero_with_gradient():
    embeddings, _ = random_batch(1, 4, seed=3)
    loss = TripletLoss(miner=DistanceMiner())(embeddings, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_half_precision_input_gives_float32_loss():
    embeddings, labels = random_batch(4, 4, seed=4)
    half = embeddings.detach().to(torch.float16)
    loss = TripletLoss(miner=DistanceMiner(seed=4))(half, labels)
    assert loss.dtype == torch.float32
    triplets = triplet_list(distance_weighted_triplets(half, labels, generator=torch.Generator().manual_seed(4)))
    torch.testing.assert_close(loss.double(), triplet_reference(half.double(), triplets, 0.2), rtol=1e-5, atol=0)
