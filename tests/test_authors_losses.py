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
    'npair': {'arch': 'bninception_frozen_normalize'},
    'snr': {'loss_snr_margin': 0.5},
    'lifted': {'loss_lifted_neg_margin': 0.5, 'loss_lifted_l2': 0.05},
    'angular': {'loss_angular_alpha': 36.0},
    'quadruplet': {'loss_quadruplet_margin_alpha_1': 0.3, 'loss_quadruplet_margin_alpha_2': 0.1},
    'histogram': {'loss_histogram_nbins': 33},
    'ap_loss': {'loss_ap_loss_anneal': 0.05},
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
        embeddings, labels = random_training_batch(seed, unnormalised=loss in ('npair', 'lifted', 'angular'))
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
    """One class: no negative (the authors' code crashes or gives nan for most losses here). The loss is 0 with a
    zero gradient (multisimilarity, histogram: no pair counts; ap_loss: every item is relevant, AP 1), except the
    embedding-norm term of npair and angular, whose anchors keep empty negative sets as in the authors' code."""
    embeddings, _ = random_training_batch(5)
    labels = torch.zeros(len(embeddings), dtype=torch.long)
    criterion = make_criterion(loss, 0)
    tuples = given_tuples(criterion, embeddings, labels)
    (ours, our_grad), (theirs, their_grad) = ours_and_theirs(loss, criterion, embeddings, labels, tuples)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    if loss in ('npair', 'angular'):
        assert ours.item() == pytest.approx(0.005 * embeddings.norm(dim=1).mean().item(), rel=1e-9)
        torch.testing.assert_close(our_grad, their_grad, rtol=1e-7, atol=1e-10)
    else:
        assert ours.item() == pytest.approx(0.0, abs=1e-12)
        assert our_grad is None or torch.allclose(our_grad, torch.zeros_like(our_grad), atol=1e-12)


@pytest.mark.parametrize('loss', sorted(name for name, module in criteria.MODULES.items() if module.MINERS))
def test_no_tuples_gives_zero_with_zero_gradient(loss):
    embeddings, labels = random_training_batch(4)
    criterion = make_criterion(loss, 0)
    none = torch.zeros(0, dtype=torch.long)
    empty = {'lifted': (none, torch.zeros(0, len(labels), dtype=torch.bool),
                        torch.zeros(0, len(labels), dtype=torch.bool)),
             'npair': (none, none, torch.zeros(0, len(labels), dtype=torch.bool))}
    empty['angular'] = empty['npair']
    ours, our_grad = value_and_gradient(lambda x: criterion(x, labels, indices_tuple=empty.get(loss, (none,) * 3)),
                                        embeddings)
    assert ours.item() == 0 and torch.equal(our_grad, torch.zeros_like(our_grad))


@pytest.mark.parametrize('loss', sorted(AUTHORS_LOOPS))
def test_half_precision_embeddings_give_a_float32_loss(loss):
    embeddings, labels = random_training_batch(3)
    criterion = make_criterion(loss, 0).float()
    assert criterion(embeddings.to(torch.bfloat16), labels).dtype == torch.float32


# What the authors' files computed, run on the CPU, on one batch (labels below, torch.Generator seed 1, randn(8, 8)
# in float64, L2-normalised; npair, lifted and angular on twice the embeddings) with the tuples below. angular: their
# file with its crashing list-of-arrays index replaced by one index tensor, on a batch with as many negatives for
# every anchor; multisimilarity on that batch too (their file crashes on an anchor without positive).
AUTHORS_VALUES = {
    'margin': 1.3928068137346488, 'triplet': 0.3669414178588018, 'contrastive': 1.191128814024181,
    'snr': 1.3003040737607707, 'quadruplet': 0.646437872229733, 'npair': 2.5705932342445132,
    'lifted': 4.384214285256275, 'angular': 12.421667292085603, 'multisimilarity': 0.9602913174921301,
    'histogram': 0.5630618614317637, 'ap_loss': 0.25320106744766235,
}
GOLDEN_LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
BALANCED_LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
GOLDEN_TRIPLETS = tuple(torch.tensor(column) for column in zip(
    [0, 1, 2], [1, 0, 5], [2, 3, 7], [3, 4, 0], [4, 2, 6], [5, 6, 1], [6, 5, 3], [7, 7, 4]))


def golden_tuples(loss, labels):
    others = labels[None, :] != labels[:, None]
    partners = (labels[None, :] == labels[:, None]) & ~torch.eye(len(labels), dtype=torch.bool)
    if loss == 'lifted':
        return torch.arange(7), partners[:7], others[:7]
    if loss == 'npair':
        return torch.arange(7), torch.tensor([1, 0, 4, 2, 3, 6, 5]), others[:7]
    if loss == 'angular':
        return torch.arange(8), torch.tensor([1, 0, 3, 2, 5, 4, 7, 6]), others
    if loss == 'quadruplet':
        return (*GOLDEN_TRIPLETS, torch.tensor([3, 0, 1, 6, 2, 7, 4, 5]))
    return GOLDEN_TRIPLETS


@pytest.mark.parametrize('loss', sorted(AUTHORS_VALUES))
def test_values_the_authors_files_computed(loss):
    labels = BALANCED_LABELS if loss in ('angular', 'multisimilarity') else GOLDEN_LABELS
    points = torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    embeddings = points / points.norm(dim=1, keepdim=True) * (2 if loss in ('npair', 'lifted', 'angular') else 1)
    criterion = criteria.select(loss, options(loss, loss_margin_nu=0.1, batch_mining=None), n_classes=4).double()
    if loss == 'margin':
        criterion.beta.data = torch.tensor([1.1, 1.2, 1.3, 1.25], dtype=torch.float64)
    if loss == 'snr':
        criterion.reg_lambda = 0.005  # as with the softhard miner their run used
    value = criterion(embeddings, labels, indices_tuple=golden_tuples(loss, labels))
    # their margin's beta and Smooth-AP's sum are float32
    assert value.item() == pytest.approx(AUTHORS_VALUES[loss], rel=1e-6 if loss in ('margin', 'ap_loss') else 1e-12)


def test_histogram_bins_all_similarities_where_the_authors_lose_them():
    """Their bin test compares float32 bin positions with float64 nodes for equality: with a bin width that is not a
    power of two (nbins 100) most similarities fall in no bin and their loss reads 0.188 on the batch above; ours
    bins them all, as pytorch-metric-learning's HistogramLoss and the loop reference do."""
    points = torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    embeddings = points / points.norm(dim=1, keepdim=True)
    criterion = criteria.select('histogram', options('histogram', loss_histogram_nbins=100))
    value = criterion(embeddings, GOLDEN_LABELS)
    assert value.item() != pytest.approx(0.18817090371164213, rel=0.1)
    assert value.item() == pytest.approx(AUTHORS_LOOPS['histogram'](embeddings, GOLDEN_LABELS, None, criterion).item(),
                                         rel=1e-12)


@pytest.mark.filterwarnings('ignore:Using a non-tuple sequence')  # the library's list indexing, deprecated in torch
@pytest.mark.parametrize('nbins', [65, 33, 17])  # widths 2^-k: the library's float32 bin positions are exact
@pytest.mark.parametrize('seed', [2, 7, 10])  # random_training_batch: no lone sample, no duplicate (s = 1 fails there)
def test_histogram_equals_pytorch_metric_learning_on_batches_without_a_lone_sample(nbins, seed):
    """pytorch-metric-learning's HistogramLoss (nbins - 1 bins, dot products, embeddings not normalised again)
    computes the authors' value where every sample has a positive (it builds its pairs from triplets, so a lone
    sample's negative pairs are left out there)."""
    from pytorch_metric_learning.distances import DotProductSimilarity
    from pytorch_metric_learning.losses import HistogramLoss

    library = HistogramLoss(n_bins=nbins - 1, distance=DotProductSimilarity(normalize_embeddings=False))
    criterion = criteria.select('histogram', options('histogram', loss_histogram_nbins=nbins))
    embeddings, labels = random_training_batch(seed)
    ours = value_and_gradient(lambda x: criterion(x, labels), embeddings)
    theirs = value_and_gradient(lambda x: library(x, labels), embeddings)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_smooth_ap_equals_pytorch_metric_learning_where_that_applies():
    """pytorch-metric-learning's SmoothAPLoss reshapes the batch into (samples per class) x (classes): it computes
    the Smooth-AP code's value only for contiguous classes of equal size, as many classes as samples each. It
    normalises the embeddings first, so on unit embeddings its gradient is our gradient's tangential part."""
    from pytorch_metric_learning.losses import SmoothAPLoss

    points = torch.randn(16, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    embeddings, labels = points / points.norm(dim=1, keepdim=True), torch.arange(4).repeat_interleave(4)
    criterion = criteria.select('ap_loss', options('ap_loss'))
    ours, our_grad = value_and_gradient(lambda x: criterion(x, labels), embeddings)
    theirs, their_grad = value_and_gradient(lambda x: SmoothAPLoss(temperature=0.01)(x, labels), embeddings)
    tangential = our_grad - (our_grad * embeddings).sum(dim=1, keepdim=True) * embeddings
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-6, atol=0)  # theirs sums in float32
    torch.testing.assert_close(tangential, their_grad.double(), rtol=1e-5, atol=1e-7)
