"""MultiSimilarityLoss against a float64 loop implementation of DESIGN.md §4."""
import pytest
import torch

from criteria.multisimilarity import MultiSimilarityLoss
from criteria_references import gradient, multisimilarity_anchor_terms, multisimilarity_reference, random_batch


@pytest.mark.parametrize('n_classes, per_class, seed', [(8, 2, 0), (4, 4, 1), (4, 4, 2)])
def test_matches_loop_reference_values_and_gradients(n_classes, per_class, seed):
    embeddings, labels = random_batch(n_classes, per_class, seed=seed)
    loss, grad = gradient(lambda x: MultiSimilarityLoss()(x, labels), embeddings)
    expected, expected_grad = gradient(lambda x: multisimilarity_reference(x, labels), embeddings)
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_non_default_hyperparameters():
    embeddings, labels = random_batch(4, 4, seed=3)
    settings = dict(margin=0.3, threshold=0.2)
    loss, grad = gradient(lambda x: MultiSimilarityLoss(pos_weight=3.0, neg_weight=20.0, **settings)(x, labels),
                          embeddings)
    expected, expected_grad = gradient(
        lambda x: multisimilarity_reference(x, labels, a=3.0, b=20.0, **settings), embeddings)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


def test_skips_anchors_without_positives_or_hard_pairs():
    # Classes 0 and 1 are tight pairs far from everything: with margin 0.05 their anchors have no
    # hard negatives. Sample 8 is alone in its class. Only the anchors of classes 2 and 3 count.
    e = torch.eye(4, dtype=torch.float64)
    points = torch.stack([e[0], e[0] + 0.01 * e[1], -e[0], -e[0] + 0.01 * e[1],
                          e[2], e[3], e[2] + e[3], e[2] - e[3], e[0] + e[2]])
    points = points / points.norm(dim=1, keepdim=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4])
    assert set(multisimilarity_anchor_terms(points, labels, margin=0.05)) == {4, 5, 6, 7}
    loss, grad = gradient(lambda x: MultiSimilarityLoss(margin=0.05)(x, labels), points)
    expected, expected_grad = gradient(lambda x: multisimilarity_reference(x, labels, margin=0.05), points)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize('labels', [torch.arange(6), torch.zeros(6, dtype=torch.long)])
def test_all_anchors_skipped_gives_zero_with_gradient(labels):
    embeddings, _ = random_batch(6, 1)
    loss = MultiSimilarityLoss()(embeddings, labels)
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_half_precision_input_gives_float32_loss():
    embeddings, labels = random_batch(4, 4, seed=4)
    loss = MultiSimilarityLoss()(embeddings.detach().to(torch.bfloat16), labels)
    assert loss.dtype == torch.float32
    expected = multisimilarity_reference(embeddings.detach().to(torch.bfloat16).double(), labels)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0)
