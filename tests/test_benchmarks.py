"""The benchmark scripts run end to end with tiny settings and report what the README quotes from them.

(benchmarks/gpu_check.sh runs these two scripts; `GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh` checks it on a CPU.)
"""
import json
import math

from benchmarks import eval_speed, train_speed


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_train_speed_reports_pipeline_step_and_epoch_ratios(tmp_path):
    report_file = tmp_path / 'train_speed.json'
    assert train_speed.main([
        '--device', 'cpu', '--amp', '--arch', 'resnet18_normalize', '--image_size', '32', '--bs', '8',
        '--seconds', '0', '--photos', '2', '--photo_sizes', '160x120', '--epoch_image_size', '32',
        '--epoch_classes', '4', '--epoch_per_class', '2', '--epoch_repeat', '1', '--workers', '1',
        '--json', str(report_file)]) == 0
    report = json.loads(report_file.read_text())

    pipeline = report['pipeline']['160x120']
    assert set(pipeline['images_per_s']) == {'decode only', 'authors', 'ours', 'ours without draft',
                                             'ours with Pillow resampling'}
    assert all(positive(pipeline[key]) for key in ('ours_over_authors', 'ours_over_decode_only', 'draft_gain',
                                                    'torch_resampling_gain'))
    assert set(report['steps']['images_per_s']) == {'MS', 'MS+PSD', 'MS+PSD+OBDP', 'bare fwd+bwd'}
    assert all(positive(value) for value in report['steps'].values() if not isinstance(value, dict))
    assert positive(report['epoch']['epoch_over_ceiling']) and report['epoch']['steps_per_epoch'] == 1


def test_eval_speed_agrees_with_pytorch_metric_learning(tmp_path):
    report_file = tmp_path / 'eval_speed.json'
    eval_speed.main(['--n', '600', '--classes', '60', '--json', str(report_file)])
    report = json.loads(report_file.read_text())
    assert math.isclose(report['ours']['e_recall@1'], report['pml']['precision_at_1'], rel_tol=1e-9)
    assert math.isclose(report['ours']['mAP@R'], report['pml']['mean_average_precision_at_r'], rel_tol=1e-6)
    assert positive(report['ours_s']) and positive(report['pml_s'])
