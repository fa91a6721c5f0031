import pytest

import parameters
from plumbing.errors import UserError

ORIGINAL_DEFAULTS = {
    'lr': 1e-5, 'decay': 4e-4, 'bs': 112, 'n_epochs': 150, 'embed_dim': 128, 'arch': 'resnet50_frozen_normalize',
    'samples_per_class': 2, 'loss_multisimilarity_pos_weight': 2, 'loss_multisimilarity_neg_weight': 40,
    'loss_multisimilarity_margin': 0.1, 'loss_multisimilarity_thresh': 0.5, 'kd_tau': 1, 'kd_lambda': 75,
    'diffusion_w': 0.99, 'diffusion_tau': 1, 'tau': [1000], 'gamma': 0.3, 'optim': 'adam', 'kernels': 6,
    'save_path': 'Training_Results', 'loss': 'multisimilarity_obd_sd', 'image_size': 224, 'fc_lr': -1,
    'augmentation': 'base', 'PSD': False, 'OBDP': False, 'dry_run': False, 'data_sampler': 'class_random',
    # The losses' and miners' flags (their parameters.py); --batch_mining None resolves to their 'distance'.
    'loss_contrastive_pos_margin': 0, 'loss_contrastive_neg_margin': 1, 'loss_triplet_margin': 0.2,
    'loss_margin_margin': 0.2, 'loss_margin_beta_lr': 0.0005, 'loss_margin_beta': 1.2, 'loss_margin_nu': 0,
    'loss_margin_beta_constant': False, 'loss_npair_l2': 0.005, 'loss_angular_alpha': 45,
    'loss_angular_npair_ang_weight': 2, 'loss_angular_npair_l2': 0.005, 'loss_lifted_neg_margin': 1,
    'loss_lifted_l2': 0.005, 'loss_quadruplet_margin_alpha_1': 0.2, 'loss_quadruplet_margin_alpha_2': 0.2,
    'loss_histogram_nbins': 65, 'loss_snr_margin': 0.2, 'loss_snr_reg_lambda': 0.005, 'batch_mining': None,
    'miner_distance_lower_cutoff': 0.5, 'miner_distance_upper_cutoff': 1.4, 'miner_rho_distance_lower_cutoff': 0.5,
    'miner_rho_distance_upper_cutoff': 1.4, 'miner_rho_distance_cp': 0.2,
}


def test_defaults_are_the_original_ones():
    opt = parameters.build_parser().parse_args([])
    assert {k: getattr(opt, k) for k in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS


def test_source_prefix_sets_source_path():
    assert parameters.build_parser().parse_args(['--source', '/data/cub200']).source_path == '/data/cub200'


def test_dataset_metric_defaults():
    cub = parameters.parse_args(['--dataset', 'cub200'])
    sop = parameters.parse_args(['--dataset', 'online_products'])
    assert cub.evaluation_metrics == ['e_recall@1', 'e_recall@2', 'e_recall@4', 'e_recall@8', 'nmi', 'f1', 'mAP@R']
    assert sop.evaluation_metrics == ['e_recall@1', 'e_recall@10', 'e_recall@100', 'e_recall@1000', 'nmi', 'mAP@R']
    explicit = parameters.parse_args(['--dataset', 'cub200', '--evaluation_metrics', 'e_recall@1', 'nmi'])
    assert explicit.evaluation_metrics == ['e_recall@1', 'nmi']


def test_digits_defaults_only_where_the_user_set_nothing():
    opt = parameters.parse_args(['--dataset', 'digits', '--bs', '24', '--arch', 'resnet34_normalize'])
    assert opt.bs == 24 and opt.arch == 'resnet34_normalize'
    assert opt.not_pretrained and opt.image_size == 32 and opt.samples_per_class == 8
    assert 'bs' not in opt.applied_defaults and opt.applied_defaults['image_size'] == 32
    assert parameters.parse_args(['--dataset', 'cub200']).applied_defaults == {}


@pytest.mark.parametrize('args, message', [
    (['--bs', '111'], 'not divisible by --samples_per_class'),
    (['--samples_per_class', '1', '--bs', '10'], 'at least 2'),
    (['--diffusion_w', '1.0'], r'\[0, 1\)'),
    (['--diffusion_w', '-0.1'], r'\[0, 1\)'),
    (['--kd_tau', '0'], '--kd_tau must be positive'),
    (['--embed_dim', '0'], '--embed_dim must be positive'),
    (['--n_epochs', '0'], '--n_epochs must be at least 1'),
    (['--loss', 'npairs'], 'unknown --loss'),
    (['--loss', 'adversarial_separation'], 'needs the multi-head DiVA network'),
    (['--loss', 'lifted', '--batch_mining', 'distance'], 'does not take --batch_mining distance: choose one of lifted'),
    (['--loss', 'margin', '--batch_mining', 'parametric'], 'parametric miner is not available'),
    (['--arch', 'vggnet16'], 'unknown --arch'),  # vgg16 itself is a timm model
    (['--dataset', 'imagenet'], 'unknown --dataset'),
    (['--evaluation_metrics', 'e_recall@1', 'recall@x'], 'recall@x'),
    (['--storage_metrics', 'f1', '--evaluation_metrics', 'nmi'], 'not among --evaluation_metrics'),
    (['--storage_metrics', 'dists@intra', '--evaluation_metrics', 'dists@intra', 'e_recall@1'],
     'dists@intra measures the embedding space and has no best value'),
    (['--OBDP'], 'add --PSD'),
    (['--PSD', '--loss', 'margin'], 'margin_obd_sd'),
    (['--tv_split_perc', '1.5'], 'tv_split_perc'),
])
def test_bad_values_are_user_errors(args, message):
    with pytest.raises(UserError, match=message):
        parameters.parse_args(args)


def test_every_unknown_metric_is_named_in_one_line_with_the_closest_known_name(capsys):
    """The names the authors' evaluation accepts are known; every unknown one is named, each with a suggestion."""
    from runs import one_line_error, run_entry_point

    authors = ['rho_spectrum@0', 'rho_spectrum@-1', 'dists@intra', 'dists@inter', 'dists@intra_over_inter', 'mAP',
               'mAP_c', 'mAP_1000', 'mAP_lim', 'c_recall@1', 'c_nmi', 'c_f1', 'c_mAP', 'c_mAP_c', 'c_mAP_1000',
               'c_mAP_lim', 'r_precision', 'mrr', 'precision@5', 'ami']
    parameters.parse_args(['--dataset', 'digits', '--evaluation_metrics', *authors])
    code = run_entry_point('main', '--dataset', 'digits', '--evaluation_metrics', 'e_recal@1', 'dists@intra',
                           'rho_spectrum@x', 'NMI', '--dry_run')
    error = one_line_error(capsys, code)
    assert ("unknown evaluation metrics 'e_recal@1' (did you mean e_recall@1?), 'rho_spectrum@x' (M is an integer, "
            "e.g. rho_spectrum@-1), 'NMI' (did you mean nmi?); known: e_recall@K") in error


def test_save_embeddings_needs_the_test_metrics(capsys):
    from runs import one_line_error, run_entry_point

    code = run_entry_point('main', '--dataset', 'digits', '--use_tv_split', '--no_test_metrics', '--save_embeddings',
                           '--dry_run')
    assert '--save_embeddings writes the test embeddings' in one_line_error(capsys, code)


@pytest.mark.parametrize('args, message', [(['--bs', 'many'], '--bs'),
                                           (['--data_sampler', 'class_randm'], "choose from 'class_random', ")])
def test_parser_errors_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        parameters.build_parser(prog='main.py').parse_args(args)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
