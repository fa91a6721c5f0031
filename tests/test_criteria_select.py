"""criteria.select: names, flags passed through, and user errors."""
import argparse

import pytest
import torch

import criteria
from criteria.arcface import ArcFaceLoss
from criteria.contrastive import ContrastiveLoss
from criteria.margin import MarginLoss
from criteria.multisimilarity import MultiSimilarityLoss
from criteria.obd_sd import ObdSdLoss
from criteria.proxyanchor import ProxyAnchorLoss
from criteria.proxynca import ProxyNcaLoss
from criteria.softmax import NormalizedSoftmaxLoss
from criteria.softtriplet import SoftTripleLoss
from criteria.triplet import TripletLoss
from plumbing.errors import UserError


def make_opt(**overrides):
    """The loss flags with the defaults of the parser, as main.py passes them."""
    flags = dict(
        loss_multisimilarity_pos_weight=2.0, loss_multisimilarity_neg_weight=40.0,
        loss_multisimilarity_margin=0.1, loss_multisimilarity_thresh=0.5,
        loss_margin_margin=0.2, loss_margin_beta=1.2, loss_margin_beta_constant=False, loss_margin_nu=0.0,
        loss_margin_beta_lr=0.0005,
        loss_triplet_margin=0.2, loss_contrastive_pos_margin=0.0, loss_contrastive_neg_margin=1.0,
        miner_distance_lower_cutoff=0.5, miner_distance_upper_cutoff=1.4,
        embed_dim=16, seed=0, loss_proxynca_lrmulti=50.0, loss_softmax_lr=1e-5, loss_softmax_temperature=0.05,
        loss_arcface_lr=5e-4, loss_arcface_angular_margin=0.5, loss_arcface_feature_scale=16.0,
        loss_softtriplet_n_centroids=2, loss_softtriplet_margin_delta=0.01, loss_softtriplet_gamma=0.1,
        loss_softtriplet_lambda=8.0, loss_softtriplet_reg_weight=0.2, loss_softtriplet_lrmulti=1.0,
        loss_proxyanchor_alpha=32.0, loss_proxyanchor_delta=0.1, loss_proxyanchor_lrmulti=100.0,
        PSD=False, OBDP=False, kd_lambda=1.0, kd_tau=1.0, diffusion_w=0.0, diffusion_tau=1.0, n_epochs=150)
    flags.update(overrides)
    return argparse.Namespace(**flags)


BASE_TYPES = {'multisimilarity': MultiSimilarityLoss, 'margin': MarginLoss, 'triplet': TripletLoss,
              'contrastive': ContrastiveLoss, 'proxynca': ProxyNcaLoss, 'softmax': NormalizedSoftmaxLoss,
              'arcface': ArcFaceLoss, 'softtriplet': SoftTripleLoss, 'proxyanchor': ProxyAnchorLoss}


def test_names():
    assert set(criteria.LOSSES) == set(BASE_TYPES) | {name + '_obd_sd' for name in BASE_TYPES}


@pytest.mark.parametrize('name', list(BASE_TYPES))
def test_selects_every_loss_and_its_obd_sd_variant(name):
    assert type(criteria.select(name, make_opt(), n_classes=10)) is BASE_TYPES[name]
    wrapped = criteria.select(name + '_obd_sd', make_opt(PSD=True, OBDP=True, diffusion_w=0.3), n_classes=10)
    assert isinstance(wrapped, ObdSdLoss) and type(wrapped.base_loss) is BASE_TYPES[name]
    embeddings = torch.nn.functional.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    labels = torch.arange(4).repeat_interleave(2)
    loss = wrapped(embeddings, labels, teacher_batch=embeddings.detach().flip(0), epoch=1)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(embeddings.grad).all()


def test_passes_flags_to_the_constructors():
    opt = make_opt(loss_multisimilarity_pos_weight=3.0, loss_multisimilarity_neg_weight=30.0,
                   loss_multisimilarity_margin=0.2, loss_multisimilarity_thresh=0.4,
                   loss_margin_margin=0.3, loss_margin_beta=1.1, loss_margin_nu=0.01, loss_margin_beta_lr=0.1,
                   miner_distance_lower_cutoff=0.6, miner_distance_upper_cutoff=1.3,
                   loss_triplet_margin=0.4, loss_contrastive_pos_margin=0.1, loss_contrastive_neg_margin=0.9,
                   PSD=True, OBDP=True, kd_lambda=75.0, kd_tau=2.0, diffusion_w=0.99, diffusion_tau=0.005,
                   n_epochs=300)
    ms = criteria.select('multisimilarity_obd_sd', opt)
    assert (ms.psd, ms.obdp, ms.kd_lambda, ms.kd_tau, ms.diffusion_w, ms.diffusion_tau, ms.n_epochs) == (
        True, True, 75.0, 2.0, 0.99, 0.005, 300)
    base = ms.base_loss
    assert (base.pos_weight, base.neg_weight, base.margin, base.threshold) == (3.0, 30.0, 0.2, 0.4)
    margin = criteria.select('margin', make_opt(**{**vars(opt), 'PSD': False, 'OBDP': False}), n_classes=7)
    assert (margin.margin, margin.nu, margin.miner.lower_cutoff, margin.miner.upper_cutoff) == (0.3, 0.01, 0.6, 1.3)
    assert torch.equal(margin.beta.detach(), torch.full((7,), 1.1))
    assert margin.param_groups(1e-5)[0]['lr'] == 0.1
    constant = criteria.select('margin', make_opt(loss_margin_beta_constant=True), n_classes=10)
    assert constant.param_groups(1e-5) == []
    assert criteria.select('triplet', make_opt(loss_triplet_margin=0.4)).margin == 0.4
    contrastive = criteria.select('contrastive', make_opt(loss_contrastive_pos_margin=0.1,
                                                          loss_contrastive_neg_margin=0.9))
    assert (contrastive.pos_margin, contrastive.neg_margin) == (0.1, 0.9)


@pytest.mark.parametrize('name', ['multisimilarity_obd_sd', *BASE_TYPES])
def test_without_psd_no_teacher_is_needed(name):
    criterion = criteria.select(name, make_opt(), n_classes=10)
    assert not criterion.needs_teacher(10)
    torch.manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    labels = torch.arange(4).repeat_interleave(2)
    loss = criterion(embeddings, labels, epoch=10)
    assert torch.isfinite(loss) and loss.item() > 0
    if name in BASE_TYPES:
        assert criterion.terms == {}
    else:  # the ranking loss alone: no distillation term at epoch 10 without PSD
        ranking_loss = MultiSimilarityLoss()(embeddings, labels)
        assert torch.equal(loss, ranking_loss) and torch.equal(criterion.terms['loss_rank'], ranking_loss)
        assert criterion.terms['loss_kd'].item() == 0


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(UserError, match='multisimilarity_obd_sd') as error:
        criteria.select('npair', make_opt())
    assert 'npair' in str(error.value)


def test_psd_needs_an_obd_sd_loss():
    with pytest.raises(UserError, match='--PSD needs an OBD-SD loss: use --loss margin_obd_sd'):
        criteria.select('margin', make_opt(PSD=True))


@pytest.mark.parametrize('name', ['multisimilarity', 'multisimilarity_obd_sd'])
def test_obdp_needs_psd(name):
    with pytest.raises(UserError, match='--OBDP'):
        criteria.select(name, make_opt(OBDP=True))
