"""ContrastiveLoss against a float64 loop of the authors' contrastive.py: the miner's (a, p) and (a, n) pairs."""
import pytest
import torch
import torch.nn.functional as F

from criteria.contrastive import ContrastiveLoss
from criteria.miners.distance import DistanceMiner, distance_weighted_triplets
from criteria_references import contrastive_reference, gradient, random_batch, triplet_list


@pytest.mark.parametrize('n_classes, per_class, seed, pos_margin, neg_margin',
                         [(8, 2, 0, 0.0, 1.0), (4, 4, 1, 0.0, 1.0), (4, 4, 2, 0.8, 1.5)])
def test_matches_loop_reference_on_its_miners_pairs(n_classes, per_class, seed, pos_margin, neg_margin):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    criterion = ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, miner=DistanceMiner(seed=seed))
    loss, grad = gradient(lambda x: criterion(x, labels), embeddings)
    triplets = triplet_list(distance_weighted_triplets(embeddings, labels,
                                                       generator=torch.Generator().manual_seed(seed)))
    expected, expected_grad = gradient(lambda x: contrastive_reference(x, triplets, pos_margin, neg_margin),
                                       embeddings)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_uses_the_given_pairs_only_repeats_included():
    """Pairs of the triplets, not all pairs of the batch: (0, 1) twice and (0, 2) twice, d = |a - b + 1e-6|."""
    embeddings = torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.6, 0.0], [5.0, 5.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    triplets = [torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([2, 2])]
    loss = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)(embeddings, labels, indices_tuple=triplets)
    d_ap = F.pairwise_distance(embeddings[:1], embeddings[1:2]).item()
    d_an = F.pairwise_distance(embeddings[:1], embeddings[2:3]).item()
    assert d_ap == pytest.approx(((0.3 - 1e-6) ** 2 + (0.4 - 1e-6) ** 2) ** 0.5, rel=1e-12)
    assert loss.item() == pytest.approx(d_ap + (1.0 - d_an), rel=1e-12)


def test_coinciding_embeddings_give_finite_gradients():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    triplets = [torch.tensor([0]), torch.tensor([1]), torch.tensor([2])]
    ContrastiveLoss(pos_margin=-1.0)(embeddings, torch.tensor([0, 0, 1]), indices_tuple=triplets).backward()
    assert torch.isfinite(embeddings.grad).all()


def test_no_triplets_gives_zero_with_gradient():
    embeddings, _ = random_batch(1, 4, seed=3)
    loss = ContrastiveLoss(miner=DistanceMiner())(embeddings, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_half_precision_input_gives_float32_loss():
    embeddings, labels = random_batch(4, 4, seed=4)
    half = embeddings.detach().to(torch.bfloat16)
    loss = ContrastiveLoss(miner=DistanceMiner(seed=4))(half, labels)
    assert loss.dtype == torch.float32
    triplets = triplet_list(distance_weighted_triplets(half, labels, generator=torch.Generator().manual_seed(4)))
    torch.testing.assert_close(loss.double(), contrastive_reference(half.double(), triplets, 0.0, 1.0), rtol=1e-5,
                               atol=0)
