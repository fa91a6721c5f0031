"""Every loss of the authors' registry against the per-tuple loop of their file (tests/criteria_references.py):
loss and gradient in float64 on random batches with given tuples, and on degenerate batches."""
import argparse

import pytest
import torch

import criteria
import parameters
from criteria.miners import TRIPLET_MINERS
from criteria_references import AUTHORS_LOOPS, given_tuples

N_BATCHES = 10
SETTINGS = {
    'margin': {'loss_margin_nu': 0.05},
    'contrastive': {'loss_contrastive_pos_margin': 0.2, 'loss_contrastive_neg_margin': 0.8},
    'triplet': {'loss_triplet_margin': 0.5},
    'multisimilarity': {'loss_multisimilarity_margin': 0.3},
}
"""Non-default settings, used on every other batch."""


def options(loss, **overrides):
    opt = parameters.build_parser().parse_args(['--loss', loss])
    return argparse.Namespace(**{**vars(opt), **overrides})


def make_criterion(loss, seed):
    """The loss (float64), on odd seeds with its non-default settings; the losses that take triplets with each of
    their miners in turn (seed 0: the default)."""
    overrides = dict(SETTINGS.get(loss, {})) if seed % 2 else {}
    if criteria.MODULES[loss].MINERS == TRIPLET_MINERS and seed:
        overrides['batch_mining'] = TRIPLET_MINERS[seed % len(TRIPLET_MINERS)]
    criterion = criteria.select(loss, options(loss, seed=seed, **overrides), n_classes=20).double()
    if hasattr(criterion, 'beta') and isinstance(criterion.beta, torch.nn.Parameter):
        criterion.beta.data = 1.0 + 0.4 * torch.rand(20, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(seed))
    return criterion


def random_training_batch(seed, unnormalised=False):
    """A batch as the class_random sampler draws them (2-4 samples of each drawn class, a class possibly twice),
    with on some seeds a sample whose class is alone and an exact duplicate of another sample."""
    generator = torch.Generator().manual_seed(seed)
    per_class = 2 + seed % 3
    classes = torch.randint(0, 20, (int(torch.randint(3, 7, (1,), generator=generator)),), generator=generator)
    labels = classes.repeat_interleave(per_class)
    if seed % 3 == 0:
        labels = torch.cat([labels, torch.tensor([19])])
    points = torch.randn(len(labels), 8, generator=generator, dtype=torch.float64)
    if seed % 4 == 1:
        points[1] = points[0]
    scale = 0.5 + 1.5 * torch.rand(len(labels), 1, generator=generator, dtype=torch.float64)
    points = points / points.norm(dim=1, keepdim=True) * (scale if unnormalised else 1.0)
    order = torch.randperm(len(labels), generator=generator)
    return points[order], labels[order]


def value_and_gradient(function, embeddings):
    leaf = embeddings.detach().clone().requires_grad_()
    value = function(leaf)
    return value.detach(), torch.autograd.grad(value, leaf, allow_unused=True)[0]


def ours_and_theirs(loss, criterion, embeddings, labels, tuples):
    """(value, gradient) of the criterion and of the authors' loop, on the same tuples."""
    ours = value_and_gradient(lambda x: criterion(x, labels, indices_tuple=tuples), embeddings)
    theirs = value_and_gradient(lambda x: AUTHORS_LOOPS[loss](x, labels, tuples, criterion), embeddings)
    return ours, theirs


@pytest.mark.parametrize('loss', sorted(AUTHORS_LOOPS))
def test_every_loss_matches_the_authors_loop_on_random_batches(loss):
    nonzero = 0
    for seed in range(N_BATCHES):
        criterion = make_criterion(loss, seed)
        embeddings, labels = random_training_batch(seed)
        tuples = given_tuples(criterion, embeddings, labels)
        (ours, our_grad), (theirs, their_grad) = ours_and_theirs(loss, criterion, embeddings, labels, tuples)
        assert ours.dtype == torch.float64
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12, msg=f'{loss}, batch {seed}')
        torch.testing.assert_close(our_grad, their_grad, rtol=1e-7, atol=1e-10, msg=f'{loss}, batch {seed}')
        nonzero += ours.item() != 0 and bool(our_grad.abs().sum() > 0)
    assert nonzero >= N_BATCHES - 2, 'the batches exercise the loss'


@pytest.mark.parametrize('loss', sorted(AUTHORS_LOOPS))
def test_duplicated_samples_give_finite_values_equal_to_the_loop(loss):
    """Every sample twice, exactly (the same image drawn twice): distances of 0 stay differentiable."""
    embeddings, labels = random_training_batch(2)
    embeddings, labels = torch.cat([embeddings, embeddings]), torch.cat([labels, labels])
    criterion = make_criterion(loss, 0)
    tuples = given_tuples(criterion, embeddings, labels)
    (ours, our_grad), (theirs, their_grad) = ours_and_theirs(loss, criterion, embeddings, labels, tuples)
    assert torch.isfinite(ours) and torch.isfinite(our_grad).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize('loss', sorted(AUTHORS_LOOPS))
def test_a_batch_of_one_class_gives_a_finite_loss_without_ranking_signal(loss):
    """One class: no negative (the authors' code crashes for most losses here). The loss is 0 with a zero gradient
    (multisimilarity: no anchor counts)."""
    embeddings, _ = random_training_batch(5)
    labels = torch.zeros(len(embeddings), dtype=torch.long)
    criterion = make_criterion(loss, 0)
    tuples = given_tuples(criterion, embeddings, labels)
    (ours, our_grad), (theirs, their_grad) = ours_and_theirs(loss, criterion, embeddings, labels, tuples)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    assert ours.item() == pytest.approx(0.0, abs=1e-12)
    assert our_grad is None or torch.allclose(our_grad, torch.zeros_like(our_grad), atol=1e-12)


@pytest.mark.parametrize('loss', sorted(name for name, module in criteria.MODULES.items() if module.MINERS))
def test_no_tuples_gives_zero_with_zero_gradient(loss):
    embeddings, labels = random_training_batch(4)
    criterion = make_criterion(loss, 0)
    none = torch.zeros(0, dtype=torch.long)
    ours, our_grad = value_and_gradient(lambda x: criterion(x, labels, indices_tuple=(none,) * 3), embeddings)
    assert ours.item() == 0 and torch.equal(our_grad, torch.zeros_like(our_grad))


@pytest.mark.parametrize('loss', sorted(AUTHORS_LOOPS))
def test_half_precision_embeddings_give_a_float32_loss(loss):
    embeddings, labels = random_training_batch(3)
    criterion = make_criterion(loss, 0).float()
    assert criterion(embeddings.to(torch.bfloat16), labels).dtype == torch.float32
