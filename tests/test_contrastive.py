"""ContrastiveLoss against a float64 loop over all pairs."""
import pytest
import torch

from criteria.contrastive import ContrastiveLoss
from criteria_references import contrastive_reference, gradient, random_batch


@pytest.mark.parametrize('n_classes, per_class, seed, pos_margin, neg_margin',
                         [(8, 2, 0, 0.0, 1.0), (4, 4, 1, 0.0, 1.0), (4, 4, 2, 0.8, 1.5)])
def test_matches_loop_reference(n_classes, per_class, seed, pos_margin, neg_margin):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    criterion = ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin)
    loss, grad = gradient(lambda x: criterion(x, labels), embeddings)
    expected, expected_grad = gradient(lambda x: contrastive_reference(x, labels, pos_margin, neg_margin),
                                       embeddings)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_batch_without_positive_pairs_counts_only_negatives():
    embeddings, _ = random_batch(6, 1, seed=3)
    labels = torch.arange(6)
    loss, grad = gradient(lambda x: ContrastiveLoss(neg_margin=1.5)(x, labels), embeddings)
    expected, expected_grad = gradient(lambda x: contrastive_reference(x, labels, 0.0, 1.5), embeddings)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_coinciding_embeddings_give_finite_gradients():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    ContrastiveLoss()(embeddings, torch.tensor([0, 0, 1])).backward()
    assert torch.isfinite(embeddings.grad).all()


def test_half_precision_input_gives_float32_loss():
    embeddings, labels = random_batch(4, 4, seed=4)
    half = embeddings.detach().to(torch.bfloat16)
    loss = ContrastiveLoss()(half, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), contrastive_reference(half.double(), labels, 0.0, 1.0), rtol=1e-5,
                               atol=0)
