"""Bad input: one line on stderr saying what is wrong and what to do, non-zero exit, no traceback, nothing changed."""

import pytest
import torch

from runs import one_line_error, run_entry_point, run_main, run_script, tiny_run_flags


@pytest.mark.parametrize('overrides, message', [
    ({'--source': '/nonexistent/datasets'}, 'vision.caltech.edu'),
    ({'--bs': 9}, 'not divisible'),
    ({'--samples_per_class': 1, '--bs': 8}, 'at least 2'),
    ({'--diffusion_w': 1}, 'diffusion_w'),
    ({'--kd_tau': -1}, 'kd_tau'),
    ({'--loss': 'npairs'}, 'unknown --loss'),
    ({'--loss': 'lifted', '--batch_mining': 'distance'}, '--loss lifted does not take --batch_mining distance'),
    ({'--batch_mining': 'parametric'}, 'parametric miner is not available here'),
    ({'--arch': 'resnet50_frozn'}, 'unknown --arch'),
    ({'--dataset': 'cub2000'}, 'unknown --dataset'),
    ({'--evaluation_metrics': ['e_recall@one']}, 'e_recall@one'),
    ({'--embed_dim': -4}, 'embed_dim'),
    ({'--n_epochs': 0}, 'n_epochs'),
    ({'--bs': 16, '--data_sampler': 'class_distinct'}, 'classes per batch'),
    ({'--seed': -1}, '--seed must be in 0 .. 4294967295, got -1'),
    ({'--lr': 'inf'}, '--lr must be a finite number, got inf'),
    ({'--kd_lambda': 'nan'}, '--kd_lambda must be a finite number'),
    ({'--bs': 2, '--samples_per_class': 2}, 'one class per batch; the ranking loss needs at least 2 classes'),
])
def test_bad_flags(cub, tmp_path, capsys, overrides, message):
    code = run_main(*tiny_run_flags(cub, tmp_path / 'runs', **overrides))
    assert message in one_line_error(capsys, code)
    assert not (tmp_path / 'runs').exists(), 'nothing written for a run that cannot start'


def test_folder_without_images_with_one_class_and_with_an_empty_class(tmp_path, capsys):
    root = tmp_path / 'cub200' / 'images'
    root.mkdir(parents=True)
    assert 'no class folders' in one_line_error(capsys, run_main(*tiny_run_flags(tmp_path / 'cub200', tmp_path / 'r')))
    (root / '001.Only_Bird').mkdir()
    from PIL import Image
    for i in range(3):
        Image.new('RGB', (8, 8)).save(root / '001.Only_Bird' / f'{i}.jpg')
    assert 'class' in one_line_error(capsys, run_main(*tiny_run_flags(tmp_path / 'cub200', tmp_path / 'r')))
    (root / '002.Empty_Bird').mkdir()
    assert '002.Empty_Bird' in one_line_error(capsys, run_main(*tiny_run_flags(tmp_path / 'cub200', tmp_path / 'r')))


def test_unwritable_save_path(cub, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('keep me')
    code = run_main(*tiny_run_flags(cub, blocker))
    assert '--save_path' in one_line_error(capsys, code)
    assert blocker.read_text() == 'keep me'


def test_resume_with_nothing_to_resume(cub, tmp_path, capsys):
    assert 'nothing to resume' in one_line_error(capsys, run_main('--resume', tmp_path))
    assert 'no run' in one_line_error(capsys, run_main('--resume', 'auto', '--group', 'never', '--save_path', tmp_path))
    assert 'no such run folder' in one_line_error(capsys, run_main('--resume', tmp_path / 'missing'))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(cub, tmp_path, capsys, monkeypatch):
    import criteria.multisimilarity as ms

    assert run_main(*tiny_run_flags(cub, tmp_path, **{'--n_epochs': 1})) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    last = (folder / 'last.pth').read_bytes()
    monkeypatch.setattr(ms.MultiSimilarityLoss, 'forward',
                        lambda self, batch, labels, *a, **k: batch.sum() * float('nan'))
    code = run_main('--resume', folder, '--n_epochs', '2')
    assert 'non-finite in epoch 1, step 0' in one_line_error(capsys, code)
    assert (folder / 'last.pth').read_bytes() == last


@pytest.mark.slow
def test_skip_nonfinite_counts_skipped_batches(cub, tmp_path, monkeypatch):
    import criteria.multisimilarity as ms

    original = ms.MultiSimilarityLoss.forward
    calls = []

    def every_other_nan(self, batch, labels, *args, **kwargs):
        calls.append(1)
        loss = original(self, batch, labels, *args, **kwargs)
        return loss * float('nan') if len(calls) % 2 else loss

    monkeypatch.setattr(ms.MultiSimilarityLoss, 'forward', every_other_nan)
    flags = tiny_run_flags(cub, tmp_path, **{'--bs': 4, '--samples_per_class': 2, '--skip_nonfinite': None})
    assert run_main(*flags) == 0
    from runs import read_summary
    history = read_summary(tmp_path / 'cub200' / 'tiny')['history']
    assert [entry['skipped_nonfinite'] for entry in history] == [2, 1]


def test_damaged_checkpoints_in_test_pretrained_models(cub, code_payload, tmp_path, capsys):
    payload, marker = code_payload
    pickled = tmp_path / 'pickled.pth'
    torch.save({'payload': payload}, pickled)
    truncated = tmp_path / 'truncated.pth'
    torch.save({'w': torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    for path, message in ((pickled, 'pickled Python objects'), (truncated, 'is cut short'),
                          (tmp_path / 'missing.pth', 'no checkpoint at')):
        code = run_entry_point('Test_pretrained_models', '--dataset', 'cub200', '--source', cub,
                               '--checkpoint', path, '--kernels', '0')
        stderr = capsys.readouterr().err
        assert code == 2
        assert 'Traceback' not in stderr and message in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert not marker.exists()


@pytest.mark.slow
def test_command_line_errors_have_no_traceback(tmp_path):
    result = run_script('main.py', '--dataset', 'cub200', '--source', tmp_path / 'nowhere', '--dry_run')
    assert result.returncode == 2
    assert result.stderr.startswith('error: ') and 'Traceback' not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_script('main.py', '--bs', 'lots')
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
