"""Result_Evaluations.py on fake run folders: seeds grouped into settings, mean and sample std, skipped runs."""
import csv
import json
import os
import statistics

import numpy as np
import pytest
from PIL import Image

import parameters
from plumbing.errors import UserError
from reporting.result_table import SEED_SUFFIX, find_runs, group_runs, read_run
from runs import run_entry_point, run_script

FLAG_DEFAULTS = vars(parameters.build_parser().parse_args([]))
CONFIG = {'dataset': 'digits', 'loss': 'multisimilarity_obd_sd', 'arch': 'resnet18_normalize', 'PSD': False,
          'kd_lambda': 75.0, 'n_epochs': 3, 'seed': 0, 'group': '', 'save_path': 'x', 'kernels': 0, 'gpu': [0],
          'evaluation_metrics': ['e_recall@1', 'nmi'], 'storage_metrics': ['e_recall@1', 'nmi']}
# Per setting, per seed: the three epochs' (e_recall@1, nmi).
HISTORIES = {
    'MS': [[(0.50, 0.30), (0.62, 0.28), (0.60, 0.31)],
           [(0.55, 0.20), (0.58, 0.33), (0.64, 0.25)],
           [(0.40, 0.26), (0.57, 0.27), (0.56, 0.29)]],
    'MS_PSD': [[(0.52, 0.30), (0.66, 0.35), (0.65, 0.36)],
               [(0.61, 0.31), (0.63, 0.32), (0.70, 0.30)],
               [(0.59, 0.40), (0.60, 0.41), (0.68, 0.39)]],
}


def write_run(folder, config, epochs, n_epochs=3):
    folder.mkdir(parents=True)
    config = {**CONFIG, **config, 'n_epochs': n_epochs}
    history = [{'epoch': e, 'loss': 1.0, 'e_recall@1': r, 'nmi': n, 'eval_time_s': 1.0}
               for e, (r, n) in enumerate(epochs)]
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'summary.json').write_text(json.dumps({'config': config, 'history': history}))
    return folder


@pytest.fixture
def two_settings(tmp_path):
    """digits/<setting>_s<seed>: 2 settings x 3 seeds, plus a run stopped after 1 of 3 epochs and one that has
    not finished an epoch (config.json only)."""
    root = tmp_path / 'runs' / 'digits'
    for setting, seeds in HISTORIES.items():
        for seed, epochs in enumerate(seeds):
            write_run(root / f'{setting}_s{seed}', {'group': f'{setting}_s{seed}', 'seed': seed,
                                                     'PSD': setting == 'MS_PSD', 'save_path': f'p{seed}'}, epochs)
    write_run(root / 'MS_s3', {'group': 'MS_s3', 'seed': 3}, [(0.99, 0.99)])
    folder = root / 'MS_s4'
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps({**CONFIG, 'group': 'MS_s4', 'seed': 4}))
    return tmp_path / 'runs'


def expected(setting, metric, at_epoch):
    column = 0 if metric == 'e_recall@1' else 1
    values = [max(e[column] for e in run) if at_epoch == 'best' else run[-1][column] for run in HISTORIES[setting]]
    return statistics.mean(values), float(np.std(values, ddof=1))


@pytest.mark.parametrize('at_epoch', ['best', 'last'])
@pytest.mark.slow
def test_two_settings_of_three_seeds_give_two_rows(two_settings, tmp_path, at_epoch):
    out = tmp_path / 'table'
    result = run_script('Result_Evaluations.py', two_settings, '--out', out, '--at_epoch', at_epoch)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith('| MS')]
    assert [row.split('|')[1].strip() for row in rows] == ['MS', 'MS_PSD']
    assert all(row.split('|')[2].strip() == '3' for row in rows)
    for row, setting in zip(rows, ('MS', 'MS_PSD')):
        mean, std = expected(setting, 'e_recall@1', at_epoch)
        assert row.split('|')[3].strip() == f'{100 * mean:.2f} ± {100 * std:.2f}'
    assert 'skipped' in result.stdout and 'MS_s3: in progress or stopped: 1 of 3 epochs' in result.stdout
    assert 'MS_s4: no finished epoch' in result.stdout
    assert 'ddof=1' in result.stdout

    with open(out / 'results.csv') as stream:
        lines = list(csv.DictReader(stream))
    assert [(line['setting'], line['metric']) for line in lines] == [
        ('MS', 'e_recall@1'), ('MS', 'nmi'), ('MS_PSD', 'e_recall@1'), ('MS_PSD', 'nmi')]
    for line in lines:
        mean, std = expected(line['setting'], line['metric'], at_epoch)
        assert line['n'] == '3'
        assert float(line['mean']) == pytest.approx(mean, abs=1e-12)
        assert float(line['std_ddof1']) == pytest.approx(std, abs=1e-12)
    with open(out / 'runs.csv') as stream:
        assert len(list(csv.DictReader(stream))) == 6, 'the skipped runs are not among the averaged ones'
    assert (out / 'results.md').read_text().startswith('| setting | seeds | e_recall@1 | nmi |')
    chart = np.asarray(Image.open(out / 'results.png').convert('RGB'))
    assert chart.shape[0] > 200 and chart.shape[1] > 300 and len(np.unique(chart.reshape(-1, 3), axis=0)) > 10


def test_settings_without_group_are_named_by_the_flags_that_differ(tmp_path):
    for seed in range(2):
        write_run(tmp_path / f'a{seed}', {'seed': seed}, [(0.5 + seed / 10, 0.3)], n_epochs=1)
        write_run(tmp_path / f'b{seed}', {'seed': seed, 'kd_lambda': 10.0, 'kernels': 4}, [(0.7, 0.3)], n_epochs=1)
    runs = [read_run(folder, FLAG_DEFAULTS) for folder in find_runs([str(tmp_path)])]
    assert [(name, len(runs)) for name, runs in group_runs(runs)] == [('kd_lambda=10.0', 2), ('kd_lambda=75.0', 2)]


def test_a_run_saved_before_a_flag_existed_groups_with_runs_that_compute_the_same(tmp_path):
    now_explicit = {'data_sampler': 'class_distinct', 'full_decode': True, 'compile': False}
    write_run(tmp_path / 'old', {'seed': 0}, [(0.5, 0.3)], n_epochs=1)  # before these flags: Pillow resampling
    write_run(tmp_path / 'pillow', {'seed': 1, 'pil_resampling': True, **now_explicit}, [(0.6, 0.3)], n_epochs=1)
    write_run(tmp_path / 'torch', {'seed': 2, 'pil_resampling': False, **now_explicit}, [(0.7, 0.3)], n_epochs=1)
    runs = [read_run(folder, FLAG_DEFAULTS) for folder in find_runs([str(tmp_path)])]
    grouped = [(name, sorted(os.path.basename(run['folder']) for run in runs)) for name, runs in group_runs(runs)]
    assert grouped == [('pil_resampling=False', ['torch']), ('pil_resampling=True', ['old', 'pillow'])]


def test_seed_suffixes():
    assert [SEED_SUFFIX.sub('', name) for name in ('CUB_MS_s0', 'CUB_MS_seed12', 'CUB_MS-seed-3', 'CUB_MS_s',
                                                   'CUB_MS_obdsd_e150_lamda-1000.0_d-w0.3', 'process5')] == [
        'CUB_MS', 'CUB_MS', 'CUB_MS', 'CUB_MS_s', 'CUB_MS_obdsd_e150_lamda-1000.0_d-w0.3', 'process5']


def test_globs_and_run_folders(two_settings):
    runs = find_runs([str(two_settings / 'digits' / 'MS_PSD_s*'), str(two_settings / 'digits' / 'MS_s0')])
    assert [r.rsplit('/', 1)[1] for r in runs] == ['MS_PSD_s0', 'MS_PSD_s1', 'MS_PSD_s2', 'MS_s0']


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    code = run_entry_point('Result_Evaluations', empty, '--out', tmp_path / 'out')
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.startswith('error: no runs') and stderr.count('\n') == 1
    write_run(tmp_path / 'broken', {}, [(0.5, 0.3)])
    (tmp_path / 'broken' / 'summary.json').write_text('{"config": {')
    code = run_entry_point('Result_Evaluations', tmp_path / 'broken', '--out', tmp_path / 'out')
    stderr = capsys.readouterr().err
    assert code == 2 and 'cannot read' in stderr and stderr.count('\n') == 1
    assert not (tmp_path / 'out').exists(), 'nothing is written on bad input'
    with pytest.raises(UserError, match='no such run folder'):
        find_runs([str(tmp_path / 'missing')])


def test_embedding_space_measures_have_no_best_epoch_and_the_spectrum_is_no_table_entry(tmp_path, capsys):
    config = {**CONFIG, 'evaluation_metrics': ['e_recall@1', 'dists@intra_over_inter', 'rho_spectrum@0']}
    folder = tmp_path / 'run'
    folder.mkdir()
    history = [{'epoch': e, 'e_recall@1': 0.5 + 0.1 * e, 'dists@intra_over_inter': 0.9 - 0.1 * e,
                'rho_spectrum@0': [0.6, 0.4]} for e in range(3)]
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'summary.json').write_text(json.dumps({'config': config, 'history': history}))
    assert read_run(str(folder), FLAG_DEFAULTS)['values'] == {'e_recall@1': pytest.approx(0.7)}
    assert read_run(str(folder), FLAG_DEFAULTS, at_epoch='last')['values'] == {
        'e_recall@1': pytest.approx(0.7), 'dists@intra_over_inter': pytest.approx(0.7)}
    code = run_entry_point('Result_Evaluations', folder, '--select_on', 'dists@intra_over_inter', '--out', tmp_path)
    stderr = capsys.readouterr().err
    assert code == 2 and 'measures the embedding space and has no best value' in stderr and stderr.count('\n') == 1
