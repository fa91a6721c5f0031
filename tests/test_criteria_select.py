"""criteria.select: names, flags passed through, batch miners, and user errors."""
import argparse

import pytest
import torch

import criteria
import parameters
from criteria.miners import TRIPLET_MINERS
from criteria.multisimilarity import MultiSimilarityLoss
from criteria.obd_sd import ObdSdLoss
from plumbing.errors import UserError

PARSER_DEFAULTS = vars(parameters.build_parser().parse_args([]))


def make_opt(**overrides):
    """The flags with the defaults of the parser, as main.py passes them (no distillation unless asked for; the
    tests' 16-dimensional embeddings)."""
    return argparse.Namespace(**{**PARSER_DEFAULTS, 'diffusion_w': 0.0, 'embed_dim': 16, **overrides})


def test_names():
    assert set(criteria.LOSSES) == set(criteria.MODULES) | {name + '_obd_sd' for name in criteria.MODULES}
    assert {'multisimilarity', 'margin', 'triplet', 'contrastive', 'lifted', 'npair', 'angular', 'quadruplet', 'snr',
            'histogram', 'ap_loss'} <= set(criteria.MODULES)
    for name, module in criteria.MODULES.items():
        assert module.NAME == name and module.KIND in ('pair', 'proxy', 'classification')


@pytest.mark.parametrize('name', list(criteria.MODULES))
def test_selects_every_loss_and_its_obd_sd_variant(name):
    loss_type = criteria.MODULES[name].LOSS
    assert type(criteria.select(name, make_opt(), n_classes=10)) is loss_type
    wrapped = criteria.select(name + '_obd_sd', make_opt(PSD=True, OBDP=True, diffusion_w=0.3), n_classes=10)
    assert isinstance(wrapped, ObdSdLoss) and type(wrapped.base_loss) is loss_type
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
                   miner_distance_apply_upper_cutoff=True,
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


def test_passes_the_flags_of_the_other_pair_losses():
    opt = make_opt(loss_lifted_neg_margin=0.7, loss_lifted_l2=0.01, loss_npair_l2=0.02, loss_angular_alpha=30.0,
                   loss_angular_npair_ang_weight=1.5, loss_angular_npair_l2=0.03, loss_quadruplet_margin_alpha_1=0.3,
                   loss_quadruplet_margin_alpha_2=0.4, loss_snr_margin=0.6, loss_snr_reg_lambda=0.07,
                   loss_histogram_nbins=33, loss_ap_loss_anneal=0.02, batch_mining=None, seed=5)
    lifted = criteria.select('lifted', opt)
    assert (lifted.margin, lifted.l2_weight) == (0.7, 0.01)
    npair = criteria.select('npair', opt)
    assert (npair.l2_weight, npair.scale) == (0.02, 1.0)
    assert criteria.select('npair', make_opt(arch='bninception_frozen_normalize')).scale == 0.25
    angular = criteria.select('angular', opt)
    assert (angular.squared_tangent, angular.angular_weight, angular.l2_weight) == pytest.approx((1 / 3, 1.5, 0.03))
    quadruplet = criteria.select('quadruplet', opt)
    assert (quadruplet.margin_alpha_1, quadruplet.margin_alpha_2) == (0.3, 0.4)
    assert (quadruplet.miner.seed, quadruplet.fourth_source.seed) == (5, 6), 'the two generators differ'
    snr = criteria.select('snr', make_opt(**{**vars(opt), 'batch_mining': 'softhard'}))
    assert (snr.margin, snr.reg_lambda) == (0.6, 0.07)
    assert criteria.select('histogram', opt).nbins == 33
    assert criteria.select('ap_loss', opt).anneal == 0.02


@pytest.mark.parametrize('batch_mining, reg_lambda', [(None, 0.0), ('distance', 0.0), ('random_distance', 0.0),
                                                      ('random', 0.005), ('softhard', 0.005)])
def test_snr_drops_its_regulariser_with_the_distance_miners_as_the_authors(batch_mining, reg_lambda):
    """Their snr.py sets reg_lambda to 0 where the miner's name is 'distance', which random_distance calls itself
    too."""
    assert criteria.select('snr', make_opt(batch_mining=batch_mining)).reg_lambda == reg_lambda


@pytest.mark.parametrize('loss, batch_mining, miner', [
    ('margin', None, 'distance'), ('triplet', None, 'distance'), ('contrastive', None, 'distance'),
    ('snr', None, 'distance'), ('quadruplet', None, 'distance'), ('lifted', None, 'lifted'), ('npair', None, 'npair'),
    ('angular', None, 'npair'), ('triplet', 'semihard', 'semihard'), ('contrastive', 'random', 'random'),
    ('margin_obd_sd', 'rho_distance', 'rho_distance'), ('npair', 'npair', 'npair')])
def test_batch_mining_picks_the_miner(loss, batch_mining, miner):
    criterion = criteria.select(loss, make_opt(batch_mining=batch_mining, PSD=loss.endswith('_obd_sd')),
                                n_classes=10)
    assert getattr(criterion, 'base_loss', criterion).miner.name == miner


def test_the_semihard_miner_takes_the_losss_margin():
    assert criteria.select('triplet', make_opt(batch_mining='semihard', loss_triplet_margin=0.35)).miner.margin == 0.35
    assert criteria.select('snr', make_opt(batch_mining='semihard', loss_snr_margin=0.45)).miner.margin == 0.45
    assert criteria.select('contrastive', make_opt(batch_mining='semihard')).miner.margin == 0.2


@pytest.mark.parametrize('loss', [name for name, module in criteria.MODULES.items() if not module.MINERS])
@pytest.mark.parametrize('batch_mining', ['distance', 'lifted', 'semihard'])
def test_a_loss_without_miner_ignores_batch_mining(loss, batch_mining):
    criterion = criteria.select(loss, make_opt(batch_mining=batch_mining), n_classes=10)
    assert criterion.miner is None


@pytest.mark.parametrize('loss, batch_mining, message', [
    ('lifted', 'distance', '--loss lifted does not take --batch_mining distance: choose one of lifted$'),
    ('npair', 'lifted', '--loss npair does not take --batch_mining lifted: choose one of npair$'),
    ('angular_obd_sd', 'random', '--loss angular does not take --batch_mining random: choose one of npair$'),
    ('triplet', 'npair', '--loss triplet does not take --batch_mining npair: choose one of random, semihard, '),
    ('margin', 'lifted', '--loss margin does not take --batch_mining lifted'),
    ('margin', 'parametric', 'parametric miner is not available here: it crashes in their code'),
    ('multisimilarity', 'parametric', 'parametric miner is not available here'),
    ('triplet', 'hardest', "unknown --batch_mining 'hardest'; choose one of random, semihard, softhard, distance, "),
    ('histogram', 'hardest', "unknown --batch_mining 'hardest'"),
])
def test_batch_mining_that_does_not_fit_is_refused_in_one_line(loss, batch_mining, message):
    with pytest.raises(UserError, match=message) as error:
        criteria.check(loss, make_opt(batch_mining=batch_mining, PSD=loss.endswith('_obd_sd')))
    assert '\n' not in str(error.value)


def test_the_triplet_losses_take_the_triplet_miners():
    for name, module in criteria.MODULES.items():
        if name in ('margin', 'triplet', 'contrastive', 'snr', 'quadruplet'):
            assert module.MINERS == TRIPLET_MINERS
    assert (criteria.MODULES['lifted'].MINERS, criteria.MODULES['npair'].MINERS,
            criteria.MODULES['angular'].MINERS) == (('lifted',), ('npair',), ('npair',))
    assert not criteria.MODULES['multisimilarity'].MINERS and not criteria.MODULES['histogram'].MINERS


@pytest.mark.parametrize('name', ['multisimilarity_obd_sd', *criteria.MODULES])
def test_without_psd_no_teacher_is_needed(name):
    criterion = criteria.select(name, make_opt(), n_classes=10)
    assert not criterion.needs_teacher(10)
    torch.manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    labels = torch.arange(4).repeat_interleave(2)
    loss = criterion(embeddings, labels, epoch=10)
    assert torch.isfinite(loss) and loss.item() > 0
    if name in criteria.MODULES:
        assert criterion.terms == {}
    else:  # the ranking loss alone: no distillation term at epoch 10 without PSD
        ranking_loss = MultiSimilarityLoss()(embeddings, labels)
        assert torch.equal(loss, ranking_loss) and torch.equal(criterion.terms['loss_rank'], ranking_loss)
        assert criterion.terms['loss_kd'].item() == 0


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(UserError, match='unknown --loss .npairs.; choose one of multisimilarity, ') as error:
        criteria.select('npairs', make_opt())
    assert 'contrastive_obd_sd' in str(error.value)


@pytest.mark.parametrize('name', ['adversarial_separation', 'adversarial_separation_obd_sd'])
def test_adversarial_separation_is_refused_saying_why(name):
    with pytest.raises(UserError, match='needs the multi-head DiVA network'):
        criteria.select(name, make_opt())


def test_psd_needs_an_obd_sd_loss():
    with pytest.raises(UserError, match='--PSD needs an OBD-SD loss: use --loss margin_obd_sd'):
        criteria.select('margin', make_opt(PSD=True))


@pytest.mark.parametrize('name', ['multisimilarity', 'multisimilarity_obd_sd'])
def test_obdp_needs_psd(name):
    with pytest.raises(UserError, match='--OBDP'):
        criteria.select(name, make_opt(OBDP=True))


@pytest.mark.parametrize('loss, batch_mining, described', [
    ('margin', None, 'margin (batch miner distance)'), ('lifted_obd_sd', None, 'lifted_obd_sd (batch miner lifted)'),
    ('triplet', 'softhard', 'triplet (batch miner softhard)'), ('multisimilarity_obd_sd', 'random',
                                                               'multisimilarity_obd_sd')])
def test_describe_names_the_miner_in_use(loss, batch_mining, described):
    assert criteria.describe(loss, make_opt(batch_mining=batch_mining)) == described


def test_a_dry_run_prints_the_loss_and_its_miner(tmp_path, capsys):
    from runs import run_main

    assert run_main('--dataset', 'digits', '--source_path', tmp_path, '--loss', 'npair', '--dry_run') == 0
    assert 'loss: npair (batch miner npair)\n' in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
