"""Numbers a reviewer can trust: collapsed embeddings are named and never become a best checkpoint; the best epoch
chosen on validation data, with the test metrics of that epoch; class-disjoint k-fold cross-validation; a
checkpoint evaluated with the pipeline it was trained with."""
import json

import numpy as np
import pytest
import torch

import datasets
import evaluation
import Input_Baseline
import parameters
import Result_Evaluations
import Test_pretrained_models
from datasets.transforms import to_network_input
from evaluation.collapse import collapse_of
from plumbing.errors import UserError
from run_folder.summary import RunSummary
from runs import TINY_ARCH, read_summary, run_main, tiny_run_flags


def test_healthy_embeddings_are_not_collapsed_and_collapsed_ones_are():
    rng = np.random.default_rng(0)
    assert collapse_of(rng.standard_normal((200, 16))) is None
    assert collapse_of(np.ones((200, 16))) == (0, 200, pytest.approx(0, abs=1e-6))
    zeros = np.zeros((200, 16))
    zeros[:50] = rng.standard_normal((50, 16))
    assert collapse_of(zeros)[:2] == (150, 1), '150 zero rows of 200 are a collapse'
    nearly_one_point = 1 + 1e-5 * rng.standard_normal((200, 16))
    assert collapse_of(nearly_one_point)[1] == 1 and collapse_of(nearly_one_point)[2] < 1e-6, 'one direction'
    with_duplicates = rng.standard_normal((200, 16))
    with_duplicates[:60] = with_duplicates[0]  # duplicate images: 30 % the same point is no collapse
    assert collapse_of(with_duplicates) is None
    with_duplicates[:100] = with_duplicates[0]
    assert collapse_of(with_duplicates)[1] == 100


def test_a_collapsed_epoch_is_never_a_best_one():
    summary = RunSummary(['e_recall@1', 'val_e_recall@1'])
    summary.add_epoch({'epoch': 0, 'e_recall@1': 0.9, 'collapsed': True, 'val_e_recall@1': 0.3})
    summary.add_epoch({'epoch': 1, 'e_recall@1': 0.5, 'val_e_recall@1': 0.2, 'val_collapsed': True})
    summary.add_epoch({'epoch': 2, 'e_recall@1': 0.4, 'val_e_recall@1': 0.1})
    assert summary.best_epochs() == {'e_recall@1': (0.5, 1), 'val_e_recall@1': (0.3, 0)}


def zero_head_checkpoint(folder, tmp_path):
    """Our best_e_recall@1.pth of a run folder with last_linear's weight and bias set to zero."""
    checkpoint = torch.load(folder / 'best_e_recall@1.pth', weights_only=True)
    for key in ('model.last_linear.weight', 'model.last_linear.bias'):
        checkpoint['state_dict'][key].zero_()
    path = tmp_path / 'zero_head.pth'
    torch.save(checkpoint, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('protocol', ['cub200', 'inshop'])
def test_a_zero_head_checkpoint_scores_at_most_chance_and_is_named_collapsed(protocol, make_cub200, make_inshop,
                                                                             tmp_path, capsys):
    source = make_cub200(n_classes=6, per_class=4) if protocol == 'cub200' else make_inshop()
    assert run_main(*tiny_run_flags(source, tmp_path, **{'--dataset': protocol, '--n_epochs': 1})) == 0
    checkpoint = zero_head_checkpoint(tmp_path / protocol / 'tiny', tmp_path)
    capsys.readouterr()
    out = tmp_path / 'results.json'
    assert Test_pretrained_models.main(['--dataset', protocol, '--source', str(source), '--kernels', '0',
                                        '--checkpoint', str(checkpoint), '--out', str(out)]) == 0
    result = json.loads(out.read_text())['results']['checkpoint']
    assert result['collapsed'] is True
    assert result['metrics']['e_recall@1'] == 0.0, 'every same-class image ties with the others and ranks last'
    assert 'have collapsed' in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_whose_first_epoch_collapses_keeps_its_best_checkpoints_from_the_epochs_after(cub, tmp_path,
                                                                                          monkeypatch):
    extract, calls = evaluation.embeddings.extract_embeddings, []

    def collapsing_in_epoch_0(model, loader, device, amp=False):
        calls.append(1)
        features, labels = extract(model, loader, device, amp=amp)
        return (np.ones_like(features) if len(calls) == 1 else features), labels

    monkeypatch.setattr(evaluation.embeddings, 'extract_embeddings', collapsing_in_epoch_0)
    assert run_main(*tiny_run_flags(cub, tmp_path, **{'--n_epochs': 2})) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    summary = read_summary(folder)
    assert summary['history'][0]['collapsed'] is True and 'collapsed' not in summary['history'][1]
    assert summary['best_epoch'] == {'e_recall@1': 1, 'nmi': 1}, 'epoch 0 would be the best so far without the rule'
    for name in ('e_recall@1', 'nmi'):
        assert torch.load(folder / f'best_{name}.pth', weights_only=True)['epoch'] == 1
    log = (folder / 'log.txt').read_text()
    assert log.count('the test embeddings have collapsed: of 12, 0 are zero and 12 are one and the same') == 1


@pytest.mark.slow
def test_validation_selection_reports_the_test_metrics_of_the_epoch_validation_chose(make_cub200, tmp_path):
    source = make_cub200(n_classes=8, per_class=4)
    flags = tiny_run_flags(source, tmp_path, **{'--n_epochs': 3, '--use_tv_split': None, '--tv_split_perc': 0.5,
                                                '--storage_metrics': ['val_mAP@R', 'e_recall@1']})
    assert run_main(*flags) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    summary = read_summary(folder)
    history = summary['history']
    chosen = max(history, key=lambda entry: (entry['val_mAP@R'], -entry['epoch']))
    (selection,) = summary['selected_on_validation']
    assert (selection['on'], selection['epoch'], selection['value']) == ('val_mAP@R', chosen['epoch'],
                                                                         chosen['val_mAP@R'])
    assert selection['test'] == {name: chosen[name] for name in summary['config']['evaluation_metrics']}
    assert torch.load(folder / 'best_val_mAP@R.pth', weights_only=True)['epoch'] == chosen['epoch']
    assert f'selected on validation: epoch {chosen["epoch"]}, the best val_mAP@R' in (folder / 'log.txt').read_text()

    assert Result_Evaluations.main([str(tmp_path / 'cub200'), '--select_on', 'val_mAP@R',
                                    '--out', str(tmp_path / 'table')]) == 0
    table = (tmp_path / 'table' / 'results.md').read_text()
    assert "at the epoch of each run's best val_mAP@R (selected on validation data)" in table
    row = next(line for line in table.splitlines() if line.startswith('| tiny'))
    assert f'| {100 * chosen["e_recall@1"]:.2f} |' in row


@pytest.mark.parametrize('flags, message', [
    (['--storage_metrics', 'val_e_recall@1'], 'chooses the best epoch on validation data: add --use_tv_split'),
    (['--storage_metrics', 'val_f2', '--use_tv_split'], 'val_f2 is not among --evaluation_metrics'),
    (['--cv_fold', '1'], 'add --cv_folds K'),
    (['--cv_folds', '1', '--cv_fold', '0'], '--cv_folds must be at least 2'),
    (['--cv_folds', '3'], 'needs --cv_fold I with I in 0 .. 2'),
    (['--cv_folds', '3', '--cv_fold', '3'], 'needs --cv_fold I with I in 0 .. 2, got 3'),
    (['--cv_folds', '3', '--cv_fold', '0', '--use_tv_split'], 'drop --use_tv_split'),
])
def test_impossible_selection_flags_are_one_line_errors(flags, message):
    with pytest.raises(UserError, match=message.replace('.', r'\.')):
        parameters.parse_args(['--dataset', 'cub200', '--source', '/nowhere', *flags])


def fold_classes(source, dataset, n_folds, fold, seed=0):
    opt = parameters.parse_args(['--dataset', dataset, '--source', str(source), '--image_size', '16',
                                 '--cv_folds', str(n_folds), '--cv_fold', str(fold), '--seed', str(seed)])
    data = datasets.select(opt)
    return data, set(data['validation'].class_names), set(data['training'].class_names)


@pytest.mark.parametrize('dataset', ['cub200', 'inshop'])
def test_the_folds_are_class_disjoint_and_together_the_training_classes(dataset, make_cub200, make_inshop):
    source = make_cub200(n_classes=10, per_class=2) if dataset == 'cub200' else make_inshop(n_train_items=5)
    all_training = set(datasets.select(parameters.parse_args(['--dataset', dataset, '--source', str(source)]))
                       ['training'].class_names)
    held_out = []
    for fold in (0, 1):
        data, validation, training = fold_classes(source, dataset, 2, fold)
        assert validation.isdisjoint(training) and validation | training == all_training
        assert len(validation) in (len(all_training) // 2, (len(all_training) + 1) // 2)
        held_out.append(validation)
        assert data['notes'] == [f'cross-validation: fold {fold} of 2 (seed 0) holds out {len(validation)} of the '
                                 f'{len(all_training)} training classes ({len(data["validation"])} images) for '
                                 f'validation; {len(training)} classes ({len(data["training"])} images) train']
        test_parts = datasets.test_parts(data)
        assert set(test_parts) == ({'testing'} if dataset == 'cub200' else {'query', 'gallery'}), 'test as it was'
    assert held_out[0].isdisjoint(held_out[1]) and held_out[0] | held_out[1] == all_training
    assert fold_classes(source, dataset, 2, 0)[1] == held_out[0], 'deterministic given the seed'
    assert any(fold_classes(source, dataset, 2, 0, seed)[1] != held_out[0] for seed in (1, 2, 3))


def test_folds_of_sop_hold_about_as_many_classes_of_each_super_class(make_online_products):
    from datasets.validation_split import class_folds

    groups = [0] * 9 + [1] * 6 + [2] * 3
    folds = class_folds(groups, 3, seed=5)
    for group in (0, 1, 2):
        members = folds[np.array(groups) == group]
        assert np.bincount(members, minlength=3).tolist() == [len(members) // 3] * 3
    source = make_online_products(n_train_classes=4, n_test_classes=3)
    _, validation, training = fold_classes(source, 'online_products', 2, 1)
    assert len(validation) == len(training) == 2


def test_too_many_folds_for_the_classes_is_a_one_line_error(make_cub200):
    source = make_cub200(n_classes=6, per_class=2)
    with pytest.raises(UserError, match='--cv_folds 3 leaves fold 0 1 of the 3 training classes'):
        fold_classes(source, 'cub200', 3, 0)


def fold_run(folder, fold, values):
    """A finished run folder of a 2-fold cross-validation: (val_e_recall@1, e_recall@1) per epoch."""
    folder.mkdir(parents=True)
    config = {**vars(parameters.build_parser().parse_args([])), 'dataset': 'cub200', 'group': 'MS_cv', 'seed': 0,
              'n_epochs': len(values), 'cv_folds': 2, 'cv_fold': fold, 'use_tv_split': False,
              'evaluation_metrics': ['e_recall@1'], 'storage_metrics': ['val_e_recall@1']}
    history = [{'epoch': epoch, 'e_recall@1': test, 'val_e_recall@1': val} for epoch, (val, test) in enumerate(values)]
    (folder / 'summary.json').write_text(json.dumps({'config': config, 'history': history}))


def test_result_evaluations_shows_the_folds_of_a_setting_as_one_row(tmp_path, capsys):
    fold_run(tmp_path / 'MS_cv_f0', 0, [(0.5, 0.7), (0.6, 0.2), (0.4, 0.9)])  # validation picks epoch 1: test 0.2
    fold_run(tmp_path / 'MS_cv_f1', 1, [(0.8, 0.4), (0.3, 0.9), (0.7, 0.95)])  # epoch 0: test 0.4
    assert Result_Evaluations.main([str(tmp_path), '--select_on', 'val_e_recall@1', '--out',
                                    str(tmp_path / 'table')]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('|')]
    assert lines[0] == '| setting | seeds | folds | e_recall@1 | val_e_recall@1 |'
    (row,) = lines[2:]
    assert row == (f'| MS_cv | 1 | 2 | {100 * np.mean([0.2, 0.4]):.2f} ± {100 * np.std([0.2, 0.4], ddof=1):.2f} '
                   f'| {100 * np.mean([0.6, 0.8]):.2f} ± {100 * np.std([0.6, 0.8], ddof=1):.2f} |')


@pytest.mark.slow
def test_a_big_augmentation_checkpoint_evaluates_as_its_run_did(cub, tmp_path, capsys):
    assert run_main(*tiny_run_flags(cub, tmp_path, **{'--n_epochs': 1, '--augmentation': 'big',
                                                      '--pil_resampling': None})) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    own = read_summary(folder)['history'][0]
    capsys.readouterr()
    out = tmp_path / 'results.json'
    assert Test_pretrained_models.main(['--dataset', 'cub200', '--source', str(cub), '--kernels', '0',
                                        '--checkpoint', str(folder / 'best_e_recall@1.pth'), '--out', str(out)]) == 0
    result = json.loads(out.read_text())['results']['checkpoint']
    assert result['metrics'] == {name: own[name] for name in result['metrics']}
    assert result['restored_from_config'] == {'arch': TINY_ARCH, 'embed_dim': 16, 'image_size': 32,
                                              'augmentation': 'big', 'full_decode': False, 'pil_resampling': True}
    assert (f'checkpoint: evaluated as it was trained (from its config): --arch {TINY_ARCH} --embed_dim 16 '
            '--image_size 32 --augmentation big --pil_resampling; without --full_decode') in capsys.readouterr().out


def test_the_input_baseline_scores_query_against_gallery(make_inshop, tmp_path):
    source = make_inshop()
    flags = ['--dataset', 'inshop', '--source', str(source), '--image_size', '16', '--kernels', '0',
             '--save_path', str(tmp_path), '--group', 'pixels']
    assert Input_Baseline.main(flags) == 0
    (entry,) = read_summary(tmp_path / 'inshop' / 'pixels')['history']
    data = datasets.select(parameters.parse_args(flags))

    def pixels(split):
        images = torch.stack([data[split][index][1] for index in range(len(data[split]))])
        return to_network_input(images, 'cpu').flatten(1).numpy(), data[split].labels

    queries, query_labels = pixels('query')
    expected = evaluation.compute_metrics(queries, query_labels, ['e_recall@1', 'e_recall@10', 'mAP@R'],
                                          gallery_features=pixels('gallery')[0],
                                          gallery_labels=pixels('gallery')[1])
    assert {name: entry[name] for name in expected} == pytest.approx(expected)
