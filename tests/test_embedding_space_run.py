"""A run that asks for the embedding-space measures logs them every epoch (summary.json, metrics.csv, the log,
curves.png) and, with --save_embeddings, keeps the test embeddings and the spectrum of its best epoch."""
import csv
import json
import math

import numpy as np
import pytest

from reporting import plots
from runs import TINY_ARCH, read_summary, run_main

METRICS = ['e_recall@1', 'mAP@R', 'rho_spectrum@-1', 'dists@intra_over_inter', 'rho_spectrum@0']


@pytest.mark.slow
def test_digits_run_logs_the_chosen_measures_every_epoch_and_keeps_its_best_spectrum(tmp_path, monkeypatch):
    titles = []
    save = plots.save_figure
    monkeypatch.setattr(plots, 'save_figure', lambda figure, path, **options: (
        titles.append([axis.get_title() for axis in figure.axes]), save(figure, path, **options))[1])
    assert run_main('--dataset', 'digits', '--arch', TINY_ARCH, '--not_pretrained', '--n_epochs', '2', '--source',
                    tmp_path / 'digits', '--save_path', tmp_path / 'runs', '--evaluation_metrics', *METRICS,
                    '--save_embeddings') == 0
    folder = tmp_path / 'runs' / 'digits' / 'run'
    history = read_summary(folder)['history']
    assert [entry['epoch'] for entry in history] == [0, 1]
    for entry in history:
        assert 0 <= entry['e_recall@1'] <= 1 and 0 <= entry['mAP@R'] <= 1
        assert math.isfinite(entry['rho_spectrum@-1']) and entry['rho_spectrum@-1'] > 0
        assert 0 < entry['dists@intra_over_inter'] < math.inf
        assert len(entry['rho_spectrum@0']) == 63 and sum(entry['rho_spectrum@0']) == pytest.approx(1), '64-D: 63'
    with open(folder / 'metrics.csv') as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and set(METRICS) <= set(rows[0])
    assert [float(row['dists@intra_over_inter']) for row in rows] == [e['dists@intra_over_inter'] for e in history]
    assert json.loads(rows[1]['rho_spectrum@0']) == history[1]['rho_spectrum@0'], 'the spectrum as one JSON cell'
    assert ['loss (total)', 'loss_rank', 'loss_kd', 'test metrics', 'embedding space'] in titles, 'curves.png'
    assert (folder / 'curves.png').exists()
    epoch_lines = [line for line in (folder / 'log.txt').read_text().splitlines() if ' INFO epoch ' in line]
    assert len(epoch_lines) == 2 and all('rho_spectrum@0 [63 values]' in line for line in epoch_lines)

    best = read_summary(folder)['best_epoch']['e_recall@1']
    embedded = np.load(folder / 'best_e_recall@1_embeddings.npz')
    assert sorted(embedded.files) == ['test_features', 'test_labels', 'test_paths']
    assert embedded['test_features'].shape[1] == 64 and len(embedded['test_labels']) == len(embedded['test_paths'])
    assert (folder / 'best_e_recall@1_spectrum.png').exists()
    assert [f'test embeddings of the best e_recall@1 (epoch {best})'] in titles
    from evaluation import compute_metrics

    again = compute_metrics(embedded['test_features'], embedded['test_labels'], ['rho_spectrum@-1', 'e_recall@1'])
    assert again == pytest.approx({name: history[best][name] for name in again}), 'the best epoch\'s embeddings'
