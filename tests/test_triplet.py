"""TripletLoss against a float64 loop implementation on its semi-hard triplets."""
import pytest
import torch

from criteria.miners.semihard import SemihardMiner, semihard_triplets
from criteria.triplet import TripletLoss
from criteria_references import gradient, random_batch, triplet_reference


def all_valid_triplets(labels):
    size = len(labels)
    return [(a, p, n) for a in range(size) for p in range(size) for n in range(size)
            if a != p and labels[a] == labels[p] and labels[a] != labels[n]]


@pytest.mark.parametrize('n_classes, per_class, seed', [(8, 2, 0), (4, 4, 1)])
def test_forward_matches_loop_reference_on_semihard_triplets(n_classes, per_class, seed):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    triplets = list(zip(*(index.tolist() for index in semihard_triplets(embeddings, labels, 0.2))))
    loss, grad = gradient(lambda x: TripletLoss(margin=0.2, miner=SemihardMiner(0.2))(x, labels), embeddings)
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


def test_no_triplets_gives_zero_with_gradient():
    embeddings, labels = random_batch(4, 1, seed=3)
    loss = TripletLoss(miner=SemihardMiner())(embeddings, labels)
    loss.backward()
    assert loss.item() == 0 and torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_half_precision_input_gives_float32_loss():
    embeddings, labels = random_batch(4, 4, seed=4)
    half = embeddings.detach().to(torch.float16)
    loss = TripletLoss(miner=SemihardMiner())(half, labels)
    assert loss.dtype == torch.float32
    triplets = list(zip(*(index.tolist() for index in semihard_triplets(half, labels, 0.2))))
    assert triplets
    torch.testing.assert_close(loss.double(), triplet_reference(half.double(), triplets, 0.2), rtol=1e-5, atol=0)
