"""What a run records about itself (config.json at start, log header, sessions, lr and distillation weight per
epoch, retrieval.png) and that a --wandb_key never reaches a file, the log or the terminal."""
import csv
import glob
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main
from reporting.figures import OTHER_CLASS, SAME_CLASS
from runs import read_summary, run_main, run_script, tiny_run_flags
from run_folder.record import command_line, git_commit

KEY = 'f00dfeedcafe0123456789abcdef0123456789ab'


def files_containing(folder, text):
    found = []
    for path in glob.glob(os.path.join(folder, '**', '*'), recursive=True):
        if os.path.isfile(path):
            with open(path, 'rb') as stream:
                if text.encode() in stream.read():
                    found.append(path)
    return found


@pytest.mark.slow
def test_digits_run_records_itself_and_draws_retrieval_after_epoch_0(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)  # --wandb_key sets it; restored after the test
    seen_at_start = []
    train = main.train_one_epoch

    def train_checking_config(*args, **kwargs):
        folder = tmp_path / 'runs' / 'digits' / 'demo'
        seen_at_start.append((folder / 'config.json').exists() and not (folder / 'summary.json').exists())
        return train(*args, **kwargs)

    monkeypatch.setattr(main, 'train_one_epoch', train_checking_config)
    caplog.set_level(logging.INFO)
    args = ['--dataset', 'digits', '--source', tmp_path / 'digits', '--save_path', tmp_path / 'runs', '--group', 'demo',
            '--n_epochs', '1', '--PSD', '--wandb_key', KEY]
    assert run_main(*args) == 0
    folder = tmp_path / 'runs' / 'digits' / 'demo'
    assert seen_at_start == [True], 'config.json is there before the first epoch, summary.json is not'

    config = json.loads((folder / 'config.json').read_text())
    summary = read_summary(folder)
    assert config == summary['config'] and config['PSD'] and 'wandb_key' not in config
    session, = summary['sessions']
    assert session['command'].startswith('python main.py --dataset digits')
    assert '--wandb_key HIDDEN' in session['command']
    assert session['split_sizes'] == {'training': 901, 'testing': 896}
    assert session['dataset_folder'] == str(tmp_path / 'digits')
    assert set(session['versions']) >= {'torch', 'torchvision', 'faiss', 'numpy'}
    assert session['started'] <= session['ended']
    assert session['git_commit'] == git_commit()

    log = (folder / 'log.txt').read_text().splitlines()
    assert 'command: python main.py --dataset digits' in log[0]
    assert 'configuration: {' in log[1]
    assert 'digits defaults applied where you set nothing: --arch resnet18_normalize' in log[2]
    assert (f'dataset folder: {tmp_path / "digits"} | split sizes: training 901 (5 classes), '
            'testing 896 (5 classes)') in log[3]
    assert 'versions: torch ' in log[4] and 'git commit: ' in log[4]

    pixels = np.asarray(Image.open(folder / 'retrieval.png').convert('RGB'))
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert np.all(pixels == SAME_CLASS, axis=-1).any() and np.all(pixels == OTHER_CLASS, axis=-1).any()

    assert files_containing(folder, KEY) == []
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert not any(KEY in record.getMessage() for record in caplog.records)
    assert any('--wandb_key is kept for old scripts' in record.getMessage() for record in caplog.records)
    assert os.environ['WANDB_API_KEY'] == KEY, 'the key is used by this process'


@pytest.mark.slow
def test_key_stays_out_of_an_online_logged_run(make_cub200, tmp_path):
    data = make_cub200(n_classes=4, per_class=4)
    flags = tiny_run_flags(data, tmp_path, **{'--log_online': None, '--wandb_key': KEY, '--kd_tau': 2,
                                               '--tau': 1, '--gamma': 0.5})
    result = run_script('main.py', *flags, env={'WANDB_MODE': 'offline'})
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / 'cub200' / 'tiny'
    assert KEY not in result.stdout + result.stderr
    assert files_containing(folder, KEY) == []
    uploaded = {os.path.basename(path).split('_')[0] for path in glob.glob(str(folder / 'wandb' / '**' / '*.png'),
                                                                             recursive=True)}
    assert {'curves', 'retrieval'} <= uploaded, 'the pictures go to W&B too'
    with open(folder / 'metrics.csv') as stream:
        rows = list(csv.DictReader(stream))
    assert [float(row['lr']) for row in rows] == [1e-3, 5e-4], 'the rate each epoch trained with'
    assert [float(row['kd_weight']) for row in rows] == [0.0, 1 / 2 * 10 * 2 ** 2], '(e/E)·λ·τ²'
    resumable = torch.load(folder / 'last.pth', weights_only=True)['training_state']['summary']
    assert resumable['sessions'][0]['versions']['torch'] == torch.__version__, 'plain values: resumable'


def test_command_line_hides_the_key_in_every_spelling():
    for argv in (['--wandb_key', KEY], [f'--wandb_key={KEY}'], ['--wandb', KEY], ['--wan=' + KEY]):
        shown = command_line('main.py', ['--PSD', *argv, '--seed', '3'])
        assert KEY not in shown and 'HIDDEN' in shown and shown.endswith('--seed 3')
    assert command_line('main.py', ['--group', 'w']) == 'python main.py --group w'


def test_git_commit_is_none_outside_a_checkout(tmp_path):
    assert git_commit(str(tmp_path)) is None
    commit = git_commit()
    assert commit is None or len(commit.removesuffix('-dirty')) == 40


def test_the_log_keeps_faiss_loading_messages_out_and_its_warnings_in(tmp_path):
    """faiss, imported at its first use (after the log is set up), says at INFO which CPU build it loads: not in a
    run's log; a warning of faiss's is."""
    from reporting.logs import setup_logging

    setup_logging(tmp_path)
    logging.getLogger('faiss.loader').info('Loading faiss with AVX2 support.')
    logging.getLogger('faiss.loader').warning('a warning of faiss')
    logging.getLogger('main').info('command: python main.py')
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert [line.split(' ', 2)[2] for line in (tmp_path / 'log.txt').read_text().splitlines()] == [
        'a warning of faiss', 'command: python main.py']
