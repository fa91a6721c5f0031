"""The benchmark scripts run end to end with tiny settings and report what the README quotes from them.

(benchmarks/gpu_check.sh runs these two scripts; `GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh` checks it on a CPU.)
"""
import json
import math
import re
import statistics

import pytest

from benchmarks import eval_speed, loss_speed, search_speed, startup_time, train_speed
from runs import ROOT


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


PIPELINE_RATIOS = {'ours_over_authors': ('ours', 'authors'), 'ours_over_decode_only': ('ours', 'decode only'),
                   'draft_gain': ('ours', 'ours without draft'),
                   'torch_resampling_gain': ('ours', 'ours with Pillow resampling')}
STEP_RATIOS = {'psd_obdp_step_over_ms_step': ('MS', 'MS+PSD+OBDP'), 'psd_step_over_ms_step': ('MS', 'MS+PSD'),
               'ms_over_ceiling': ('MS', 'bare fwd+bwd'), 'psd_obdp_over_ceiling': ('MS+PSD+OBDP', 'bare fwd+bwd')}
EPOCH_RATIOS = {'epoch_over_ceiling': ('epoch through DataLoader', 'bare fwd+bwd'),
                'epoch_over_device_steps': ('epoch through DataLoader', 'same steps on decoded batches')}
PRINTED = {'ours_over_authors': 'ours / authors', 'ours_over_decode_only': 'ours / decode only',
           'draft_gain': 'draft gain (ours / ours without draft)',
           'torch_resampling_gain': 'torch resampling gain (ours / ours with Pillow resampling)',
           'psd_step_over_ms_step': 'step time MS+PSD / MS', 'psd_obdp_step_over_ms_step': 'MS+PSD+OBDP / MS',
           'ms_over_ceiling': 'MS step rate / bare fwd+bwd', 'epoch_over_ceiling': 'epoch / bare fwd+bwd ceiling',
           'epoch_over_device_steps': 'epoch / same steps on decoded batches'}


def assert_ratios(part, ratios, printed):
    """Every rate of `part` positive and finite; each ratio the quotient of its two rates, printed as in the JSON."""
    rates = part['images_per_s']
    assert all(positive(rate) for rate in rates.values()), rates
    for name, (numerator, denominator) in ratios.items():
        assert positive(part[name]) and part[name] == pytest.approx(rates[numerator] / rates[denominator]), name
        if name in PRINTED:
            shown = re.search(re.escape(PRINTED[name]) + r' = ([0-9.]+)', printed)
            assert shown and float(shown.group(1)) == pytest.approx(part[name], abs=0.0051), name


@pytest.mark.slow
def test_train_speed_reports_pipeline_step_and_epoch_ratios(tmp_path, monkeypatch, capsys):
    """The rates and ratios are consistent, and what is timed is what they name: training steps that train (the
    steps part repeats one batch: each setting's loss falls), the teacher's term in the PSD settings only, whole
    epochs of the loader."""
    epochs, train = [], train_speed.train_one_epoch

    def recording_train(model, teacher, criterion, optimizer, loader, *args, **kwargs):
        progress = train(model, teacher, criterion, optimizer, loader, *args, **kwargs)
        epochs.append({'model': id(model), 'psd': getattr(criterion, 'psd', False), 'batches': len(loader),
                       'decoded': isinstance(loader, list), 'progress': progress})
        return progress

    monkeypatch.setattr(train_speed, 'train_one_epoch', recording_train)
    report_file = tmp_path / 'train_speed.json'
    assert train_speed.main([
        '--device', 'cpu', '--amp', '--arch', 'resnet18_normalize', '--image_size', '32', '--bs', '8',
        '--seconds', '0', '--photos', '2', '--photo_sizes', '160x120', '--epoch_image_size', '32',
        '--epoch_classes', '4', '--epoch_per_class', '2', '--epoch_repeat', '1', '--workers', '1',
        '--json', str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    printed = capsys.readouterr().out

    assert report['arguments']['bs'] == 8 and report['arguments']['channels_last'], '--amp implies channels-last'
    assert set(report['pipeline']) == {'160x120'}
    pipeline = report['pipeline']['160x120']
    assert set(pipeline['images_per_s']) == {'decode only', 'authors', 'ours', 'ours without draft',
                                             'ours with Pillow resampling'}
    assert_ratios(pipeline, PIPELINE_RATIOS, printed)
    assert set(report['steps']['images_per_s']) == {'MS', 'MS+PSD', 'MS+PSD+OBDP', 'bare fwd+bwd'}
    assert_ratios(report['steps'], STEP_RATIOS, printed)
    assert set(report['epoch']['images_per_s']) == {'epoch through DataLoader', 'same steps on decoded batches',
                                                    'bare fwd+bwd'}
    assert_ratios(report['epoch'], EPOCH_RATIOS, printed)
    # 4 training classes x 2 images, listed once, at --bs 8: one step an epoch
    assert report['epoch']['steps_per_epoch'] == 1 and '1 steps per epoch' in printed

    for epoch in epochs:
        progress = epoch['progress']
        assert progress.step == progress.trained_steps == epoch['batches'] >= 1, epoch
        assert progress.skipped_nonfinite == 0 and math.isfinite(progress.loss_sum) and progress.loss_sum >= 0, epoch
        assert (progress.loss_kd_sum > 0) == epoch['psd'], 'the teacher term in MS+PSD(+OBDP) only'
    losses = {}
    for epoch in epochs:
        losses.setdefault(epoch['model'], []).append((epoch['decoded'], epoch['psd'], epoch['progress'].loss_sum))
    step_settings = [runs for runs in losses.values() if all(decoded for decoded, _, _ in runs)]
    assert sorted(runs[0][1] for runs in step_settings) == [False, True, True], 'MS, MS+PSD, MS+PSD+OBDP'
    for runs in step_settings:  # a warm-up and two timed rounds on the same batch
        assert len(runs) >= 3 and runs[-1][2] < runs[0][2], runs
    epoch_trainer, = [runs for runs in losses.values() if runs not in step_settings]
    assert {decoded for decoded, _, _ in epoch_trainer} == {True, False}, 'through the DataLoader and decoded'


def test_eval_speed_agrees_with_pytorch_metric_learning_and_prints_the_ratios(tmp_path, capsys):
    report_file = tmp_path / 'eval_speed.json'
    eval_speed.main(['--n', '600', '--classes', '60', '--json', str(report_file)])
    report = json.loads(report_file.read_text())
    printed = capsys.readouterr().out
    assert math.isclose(report['ours']['e_recall@1'], report['pml']['precision_at_1'], rel_tol=1e-9)
    assert math.isclose(report['ours']['mAP@R'], report['pml']['mean_average_precision_at_r'], rel_tol=1e-6)
    assert positive(report['ours_s']) and positive(report['pml_s'])
    seconds = report['seconds']
    assert set(seconds) == {'our defaults', 'pml', "authors' defaults", *eval_speed.OTHER_NEW_METRICS}
    assert all(positive(value) for value in seconds.values())
    ratios = {'ours_over_pml': ('our defaults', 'pml', 'ours / pml (default metrics)'),
              'authors_defaults_over_ours': ("authors' defaults", 'our defaults', "authors' defaults / our defaults")}
    for name, (numerator, denominator, shown) in ratios.items():
        assert report['ratios'][name] == pytest.approx(seconds[numerator] / seconds[denominator])
        assert float(re.search(re.escape(shown) + r' = ([0-9.]+)', printed).group(1)) == pytest.approx(
            report['ratios'][name], abs=0.0051)
    assert list(report['values']["authors' defaults"]) == eval_speed.AUTHORS_DEFAULTS
    for title, names in eval_speed.OTHER_NEW_METRICS.items():
        assert list(report['values'][title]) == names
    assert len(report['values']["authors' defaults"]['rho_spectrum@0']) == 127, '128-D: 127 singular values'


@pytest.mark.slow
def test_search_speed_reports_consistent_rates_ratios_and_recall(tmp_path, capsys):
    """A tiny catalogue: every rate is its count over its seconds, every ratio the quotient of two rates, printed as
    in the JSON; the exact index's recall against itself is 1, the others' within [0, 1]."""
    report_file = tmp_path / 'search_speed.json'
    search_speed.main(['--images', '24', '--items', '4', '--queries', '6', '-k', '5', '--image_size', '16',
                       '--embed_dim', '8', '--workers', '0', '--json', str(report_file)])
    report = json.loads(report_file.read_text())
    printed = capsys.readouterr().out
    assert report['catalogue'] == {**report['catalogue'], 'images': 24, 'items': 4, 'queries': 6}
    assert list(report['build']) == list(report['query']) == ['flat', 'ivf', 'hnsw']
    for kind, built in report['build'].items():
        searched = report['query'][kind]
        assert positive(built['seconds']) and built['images_per_s'] == pytest.approx(24 / built['seconds'])
        assert 0 < built['embed_s'] + built['index_s'] <= built['seconds'], 'the parts fit in the whole'
        assert searched['queries_per_s'] == pytest.approx(6 / searched['seconds'])
        assert 0 < searched['search_s'] < searched['seconds']
        assert searched['search_queries_per_s'] == pytest.approx(6 / searched['search_s'])
        shown = re.search(rf'^{kind} .*build ([0-9.]+) images/s.*query ([0-9.]+) queries/s.*recall@5 vs flat = '
                          rf'([0-9.]+)$', printed, re.M)
        assert shown, printed
        assert float(shown.group(1)) == pytest.approx(built['images_per_s'], abs=0.051)
        assert float(shown.group(2)) == pytest.approx(searched['queries_per_s'], abs=0.051)
        assert float(shown.group(3)) == pytest.approx(report['recall@5'][kind], abs=5e-5)
        assert 0 <= report['recall@5'][kind] <= 1
    assert report['recall@5']['flat'] == 1.0
    assert report['build']['ivf']['faiss'].startswith('IVF') and report['build']['hnsw']['faiss'].startswith('HNSW')
    for kind in ('ivf', 'hnsw'):
        for part, rate in (('build', 'images_per_s'), ('query', 'queries_per_s'), ('search', 'search_queries_per_s')):
            table = report['build' if part == 'build' else 'query']
            name = f'{part}_{kind}_over_flat'
            assert report['ratios'][name] == pytest.approx(table[kind][rate] / table['flat'][rate])
            shown = re.search(re.escape(name) + r' = ([0-9.]+)', printed)
            assert shown and float(shown.group(1)) == pytest.approx(report['ratios'][name], abs=0.0051)
    assert list(report['sweep']['ivf']) == [f'nprobe {n}' for n in (8, 16, 32, 64, 128)]
    assert list(report['sweep']['hnsw']) == [f'efSearch {n}' for n in (16, 32, 64, 128)]
    for settings in report['sweep'].values():
        for setting, found in settings.items():
            assert 0 <= found['recall'] <= 1 and positive(found['queries_per_s'])
            assert f'{setting}: recall@5 {found["recall"]:.4f}' in printed
    # One list of four: every nprobe searches it all, so the IVF sweep is exact; HNSW on 24 vectors is too.
    assert all(found['recall'] == 1 for found in report['sweep']['ivf'].values())


def test_loss_speed_times_ours_the_authors_loop_and_the_library_on_the_same_tuples(tmp_path, capsys):
    """Every timing positive, each ratio the quotient of its two timings, as printed; the library column only for
    the losses it has."""
    report = tmp_path / 'loss_speed.json'
    results = loss_speed.main(['--bs', '16', '--dim', '8', '--classes', '10', '--rounds', '1', '--round_seconds',
                               '0.001', '--losses', 'margin', 'quadruplet', 'histogram', '--json', str(report)])
    assert json.loads(report.read_text()) == results and list(results) == ['margin', 'quadruplet', 'histogram']
    printed = capsys.readouterr().out
    for name, row in results.items():
        assert all(positive(row[key]) for key in ('ours', 'ours_with_mining', 'loop')), row
        assert row['loop_over_ours'] == pytest.approx(row['loop'] / row['ours'])
        assert re.search(rf'^{name} .* {row["loop_over_ours"]:.1f} ', printed, re.MULTILINE), printed
    assert results['quadruplet']['library'] is None and results['quadruplet']['library_over_ours'] is None
    assert results['margin']['library_over_ours'] == pytest.approx(results['margin']['library']
                                                                   / results['margin']['ours'])
    assert results['margin']['miner'] == 'distance' and results['histogram']['miner'] == ''


@pytest.mark.slow
def test_startup_time_times_both_checkouts_alike_and_sums_the_imports(tmp_path, capsys):
    """Both 'checkouts' this one: every run timed, the ratio the quotient of the medians, as printed; the import sums
    name the packages main.py --help imports (torch), and none it does not (matplotlib)."""
    report_file = tmp_path / 'startup.json'
    report = startup_time.main([ROOT, ROOT, '--runs', '2', '--commands', 'Hyperparameter_Search.py --help',
                                '--import_runs', '1', '--json', str(report_file)])
    assert json.loads(report_file.read_text()) == json.loads(json.dumps(report))
    timing = report['timings']['Hyperparameter_Search.py --help']
    assert len(timing['before_s']) == len(timing['after_s']) == 2
    assert all(positive(seconds) for seconds in timing['before_s'] + timing['after_s'])
    ratio = statistics.median(timing['after_s']) / statistics.median(timing['before_s'])
    assert timing['ratio_of_medians'] == pytest.approx(ratio)
    printed = capsys.readouterr().out
    assert re.search(r'^\| `python Hyperparameter_Search.py --help` \| .* \| ' + f'{ratio:.2f}' + r' \|$', printed,
                     re.MULTILINE), printed
    for sums in report['import_sums_s'].values():
        assert positive(sums['torch']) and 'matplotlib' not in sums and 'torch._dynamo' not in sums
