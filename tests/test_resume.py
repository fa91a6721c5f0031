"""Interrupted runs, resumed, end with the same history as runs left alone (--deterministic, CPU)."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import criteria
import main
from runs import ROOT, comparable, read_summary, run_main, tiny_run_flags

EPOCHS = 3


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """5 training classes x 8 images: 5 steps an epoch at --bs 8."""
    from conftest import fill_class_folder
    import numpy as np

    root = tmp_path_factory.mktemp('resume_data') / 'cub200'
    rng = np.random.default_rng(5)
    for k in range(10):
        fill_class_folder(root / 'images' / f'{k + 1:03d}.Bird_{k}', 8, 16, rng, mode_offset=k)
    return root


def flags(data, save_path, group):
    return tiny_run_flags(data, save_path, **{'--n_epochs': EPOCHS, '--group': group, '--deterministic': None})


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory):
    """The history of the run left alone."""
    save_path = tmp_path_factory.mktemp('reference')
    assert run_main(*flags(data, save_path, 'alone')) == 0
    return comparable(read_summary(save_path / 'cub200' / 'alone')['history'])


def assert_same_history(history, reference):
    history = comparable(history)
    assert [entry['epoch'] for entry in history] == [entry['epoch'] for entry in reference]
    for got, expected in zip(history, reference):
        assert got.keys() == expected.keys()
        for key in expected:
            assert math.isclose(got[key], expected[key], rel_tol=1e-6, abs_tol=1e-9), (got['epoch'], key)


class StopAfterChecks:
    """Stands in for StopSignals: 'receives SIGTERM' after a given number of checks (mid-epoch, deterministically)."""

    def __init__(self, checks):
        self.left = checks
        self.requested = None
        self.exit_code = 143

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def agree(self):
        self.left -= 1
        if self.left < 0:
            self.requested = 'SIGTERM'
        return self.requested is not None


@pytest.mark.slow
def test_stop_mid_epoch_then_resume_matches(data, reference, tmp_path, monkeypatch):
    # epoch 0 makes 6 checks (5 steps + 1 after it): the 9th check is in the middle of epoch 1
    monkeypatch.setattr(main, 'StopSignals', lambda: StopAfterChecks(8))
    assert run_main(*flags(data, tmp_path, 'cut')) == 143
    folder = tmp_path / 'cub200' / 'cut'
    state = torch.load(folder / 'last.pth', weights_only=True)['training_state']
    assert state['epoch'] == 1 and state['progress']['step'] == 3 and 'teacher' in state
    monkeypatch.undo()
    assert run_main('--resume', folder) == 0
    assert_same_history(read_summary(folder)['history'], reference)
    assert (folder / 'metrics.csv').read_text().count('\n') == EPOCHS + 1


@pytest.mark.slow
def test_a_quadruplet_run_stopped_mid_epoch_mines_and_draws_what_the_run_left_alone_did(data, tmp_path,
                                                                                       monkeypatch):
    """The distance miner's generator and quadruplet's own (its fourth samples) travel in the checkpoint: the resumed
    run draws the tuples the run left alone drew, and ends with its history."""
    quadruplet = {'--loss': 'quadruplet_obd_sd'}
    assert run_main(*flags(data, tmp_path, 'alone'), *sum(([k, v] for k, v in quadruplet.items()), [])) == 0
    alone = comparable(read_summary(tmp_path / 'cub200' / 'alone')['history'])
    monkeypatch.setattr(main, 'StopSignals', lambda: StopAfterChecks(8))
    assert run_main(*flags(data, tmp_path, 'cut'), *sum(([k, v] for k, v in quadruplet.items()), [])) == 143
    folder = tmp_path / 'cub200' / 'cut'
    state = torch.load(folder / 'last.pth', weights_only=True)['training_state']['criterion']
    assert {'base_loss.miner._extra_state', 'base_loss.fourth_source._extra_state'} <= state.keys()
    monkeypatch.undo()
    assert run_main('--resume', folder) == 0
    assert_same_history(read_summary(folder)['history'], alone)


@pytest.mark.slow
def test_a_vit_run_stopped_mid_epoch_resumes_to_the_run_left_alone(data, tmp_path, monkeypatch):
    """A timm ViT from a weights file, with AdamW and gradient clipping: weights, optimizer moments and teacher come
    back exactly, and the resumed run needs the weights file no more (the checkpoint holds every weight)."""
    import timm

    weights = tmp_path / 'W.pth'
    torch.save(timm.create_model('vit_tiny_patch16_224', img_size=32).state_dict(), weights)

    def vit_flags(group):
        return tiny_run_flags(data, tmp_path, **{'--arch': 'vit_tiny_patch16_224_normalize', '--optim': 'adamw',
                                                 '--clip_grad': 1.0, '--n_epochs': 2, '--group': group,
                                                 '--deterministic': None, '--not_pretrained': False,
                                                 '--pretrained_path': weights})

    assert run_main(*vit_flags('vit_alone')) == 0
    alone = comparable(read_summary(tmp_path / 'cub200' / 'vit_alone')['history'])
    monkeypatch.setattr(main, 'StopSignals', lambda: StopAfterChecks(8))  # 6 checks in epoch 0: stops in epoch 1
    assert run_main(*vit_flags('vit_cut')) == 143
    folder = tmp_path / 'cub200' / 'vit_cut'
    assert torch.load(folder / 'last.pth', weights_only=True)['training_state']['progress']['step'] == 3
    monkeypatch.undo()
    weights.unlink()
    assert run_main('--resume', folder) == 0
    assert_same_history(read_summary(folder)['history'], alone)


@pytest.mark.slow
def test_a_proxy_loss_run_stopped_mid_epoch_resumes_to_the_run_left_alone(data, tmp_path, monkeypatch):
    """Proxy-Anchor's proxies and their optimiser moments come back exactly: the resumed run ends where the run left
    alone does, proxies included."""
    def proxy_flags(group):
        return tiny_run_flags(data, tmp_path, **{'--loss': 'proxyanchor_obd_sd', '--n_epochs': 2, '--group': group,
                                                 '--deterministic': None})

    assert run_main(*proxy_flags('proxy_alone')) == 0
    alone = tmp_path / 'cub200' / 'proxy_alone'
    monkeypatch.setattr(main, 'StopSignals', lambda: StopAfterChecks(8))  # 6 checks in epoch 0: stops in epoch 1
    assert run_main(*proxy_flags('proxy_cut')) == 143
    folder = tmp_path / 'cub200' / 'proxy_cut'
    assert torch.load(folder / 'last.pth', weights_only=True)['training_state']['progress']['step'] == 3
    monkeypatch.undo()
    assert run_main('--resume', folder) == 0
    assert_same_history(read_summary(folder)['history'], comparable(read_summary(alone)['history']))
    proxies = [torch.load(run / 'last.pth', weights_only=True)['training_state']['criterion']
               ['base_loss.proxy_anchor.proxies'] for run in (alone, folder)]
    assert torch.equal(proxies[1], proxies[0]) and proxies[0].dtype == torch.float32
    opt = main.parameters.parse_args(proxy_flags('start'))
    start = criteria.select(opt.loss, opt, n_classes=5).base_loss.proxies
    assert not torch.allclose(proxies[0], start.detach())  # they did learn


def wait_for(path, process, timeout=240):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f'{path} never appeared'
        time.sleep(0.02)


def start(data, save_path, group, *extra):
    environment = {**os.environ, 'WANDB_MODE': 'disabled'}
    command = [sys.executable, os.path.join(ROOT, 'main.py'), *map(str, flags(data, save_path, group)), *extra]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.mark.slow
def test_sigkill_after_first_epoch_then_resume_matches(data, reference, tmp_path):
    folder = tmp_path / 'cub200' / 'killed'
    process = start(data, tmp_path, 'killed')
    wait_for(folder / 'last.pth', process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    summary_before = read_summary(folder)['history'] if (folder / 'summary.json').exists() else []
    assert len(summary_before) < EPOCHS
    assert run_main('--resume', folder) == 0  # the resume in this process: the kill is what is tested
    assert_same_history(read_summary(folder)['history'], reference)


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_and_prints_resume_command(data, reference, tmp_path):
    """Cluster pre-emption: SIGTERM reaches the run and its data-loading workers alike."""
    folder = tmp_path / 'cub200' / 'preempted'
    process = start(data, tmp_path, 'preempted', '--kernels', '1')
    wait_for(folder / 'last.pth', process)
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    if process.returncode == 0:
        pytest.skip('the run finished before the signal arrived')
    assert process.returncode == 128 + signal.SIGTERM
    assert f'--resume {folder}' in stdout + stderr
    torch.load(folder / 'last.pth', weights_only=True)
    assert run_main('--resume', 'auto', '--dataset', 'cub200', '--group', 'preempted', '--save_path', tmp_path) == 0
    assert_same_history(read_summary(folder)['history'], reference)


@pytest.mark.slow
def test_resume_refuses_a_changed_model_flag_and_a_finished_run(data, tmp_path):
    assert run_main(*tiny_run_flags(data, tmp_path, **{'--n_epochs': 1})) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder) if (folder / name).is_file()}
    assert run_main('--resume', folder, '--embed_dim', '32') == 2
    assert run_main('--resume', folder) == 2
    after = {name: (folder / name).read_bytes() for name in os.listdir(folder) if (folder / name).is_file()}
    assert before == after
    assert run_main('--resume', folder, '--n_epochs', '2') == 0
    assert len(read_summary(folder)['history']) == 2


WANDB_KEY = 'c0ffee00deadbeef0123456789abcdef01234567'


def files_containing(folder, text):
    """The files below `folder` whose bytes contain `text`."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), 'rb') as stream:
                if text.encode() in stream.read():
                    found.append(os.path.join(root, name))
    return found


@pytest.mark.slow
def test_a_requeued_command_with_wandb_key_resumes_and_keeps_the_key_out(data, tmp_path, monkeypatch, capsys,
                                                                          caplog):
    """A SLURM requeue passes the same command again, --wandb_key included: the resume trains on (it used to stop
    with KeyError: 'wandb_key'), and the key reaches no file of the run folder, the log or the terminal."""
    import logging

    monkeypatch.delenv('WANDB_API_KEY', raising=False)  # --wandb_key sets it; restored after the test
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    caplog.set_level(logging.INFO)
    first = tiny_run_flags(data, tmp_path, **{'--n_epochs': 1, '--log_online': None, '--wandb_key': WANDB_KEY})
    assert run_main(*first) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    assert run_main('--resume', folder, '--wandb_key', WANDB_KEY, '--log_online', '--n_epochs', 2) == 0
    summary = read_summary(folder)
    assert [entry['epoch'] for entry in summary['history']] == [0, 1] and len(summary['sessions']) == 2
    assert 'wandb_key' not in summary['config']
    assert files_containing(folder, WANDB_KEY) == []
    captured = capsys.readouterr()
    assert WANDB_KEY not in captured.out + captured.err
    assert not any(WANDB_KEY in record.getMessage() for record in caplog.records)
    log = (folder / 'log.txt').read_text()
    change = [line.split(' WARNING ', 1)[1] for line in log.splitlines() if 'changes the distillation weight' in line]
    assert change == ["--n_epochs 2 instead of the run's 1 changes the distillation weight (e/E)·λ·τ² from here on: "
                      "5 instead of 10 at epoch 1, growing by 5 instead of 10 an epoch"], 'one warning'


@pytest.mark.parametrize('psd, n_epochs, epoch, expected', [
    (True, 150, 100, None),  # the same --n_epochs: the same weights
    (False, 200, 100, None),  # no distillation term
    (True, 200, 100, '150 instead of 200 at epoch 100, growing by 1.5 instead of 2 an epoch'),
    (True, 300, 0, '1 instead of 2 at epoch 1'),  # epoch 0 has weight 0 either way: the next epoch's
])
def test_another_n_epochs_on_resume_names_the_old_and_new_distillation_weight(psd, n_epochs, epoch, expected):
    import argparse

    from run_folder.resume import distillation_weight_change

    checkpoint = {'config': {'n_epochs': 150}, 'training_state': {'epoch': epoch}}
    opt = argparse.Namespace(PSD=psd, kd_lambda=300.0, kd_tau=1.0, n_epochs=n_epochs)
    change = distillation_weight_change(checkpoint, opt)
    if expected is None:
        assert change is None
    else:
        assert change.startswith(f"--n_epochs {n_epochs} instead of the run's 150 changes the distillation weight")
        assert expected in change and '\n' not in change


@pytest.mark.parametrize('loss, saved_miner, warned', [
    ('margin', False, True), ('triplet_obd_sd', False, True), ('contrastive', False, True),
    ('margin', True, False), ('multisimilarity_obd_sd', False, False), ('lifted', False, False)])
def test_a_run_saved_before_the_authors_miners_is_told_its_loss_changed(loss, saved_miner, warned):
    import argparse

    from run_folder.resume import loss_math_change

    config = {'loss': loss, **({'batch_mining': None} if saved_miner else {})}
    change = loss_math_change({'config': config}, argparse.Namespace(loss=loss))
    if warned:
        base = loss.removesuffix('_obd_sd')
        assert change.startswith(f'this {base} run was saved before the authors\' batch miners came')
        assert '\n' not in change
    else:
        assert change is None


def test_session_flags_are_never_compared_with_the_resumed_run():
    import parameters
    from run_folder.resume import OVERRIDABLE, SESSION_FLAGS, options_for_resume
    from run_folder.checkpoint import plain_config

    assert SESSION_FLAGS == {'resume', 'dry_run', 'wandb_key'} and SESSION_FLAGS <= OVERRIDABLE
    parser = parameters.build_parser()
    config = plain_config(parser.parse_args(['--n_epochs', '3', '--wandb_key', WANDB_KEY]))
    assert 'wandb_key' not in config
    argv = ['--resume', 'run', '--n_epochs', '5', '--wandb_key', WANDB_KEY]
    resumed = options_for_resume(resumable(config), parser.parse_args(argv), parameters.explicit_flags(parser, argv),
                                 'run/last.pth')
    assert (resumed.wandb_key, resumed.resume, resumed.n_epochs) == (WANDB_KEY, 'run', 5)


def resumable(config):
    return {'config': config, 'training_state': {'epoch': 1, 'progress': {'step': 0}}}


@pytest.mark.parametrize('stored, expected', [(None, 'class_distinct'), ('class_distinct', 'class_distinct'),
                                              ('class_random', 'class_random')])
def test_a_resumed_run_keeps_its_sampler(stored, expected):
    import parameters
    from run_folder.resume import options_for_resume

    parser = parameters.build_parser()
    config = vars(parser.parse_args(['--n_epochs', '3']))
    if stored is None:  # written before these flags existed: distinct classes, full-size decoding, Pillow resizing
        del config['data_sampler'], config['full_decode'], config['pil_resampling']
    else:
        config['data_sampler'] = stored
    argv = ['--resume', 'run', '--n_epochs', '5']
    resumed = options_for_resume(resumable(config), parser.parse_args(argv), parameters.explicit_flags(parser, argv),
                                 'run/last.pth')
    assert resumed.data_sampler == expected and resumed.n_epochs == 5
    assert resumed.full_decode is (stored is None) and resumed.pil_resampling is (stored is None)
    other = 'class_random' if expected == 'class_distinct' else 'class_distinct'
    argv += ['--data_sampler', other]
    with pytest.raises(main.UserError, match='--data_sampler'):
        options_for_resume(resumable(config), parser.parse_args(argv), parameters.explicit_flags(parser, argv),
                           'run/last.pth')


def test_a_run_saved_before_torch_resampling_resumes_with_pillow_resampling():
    import parameters
    from run_folder.resume import options_for_resume

    parser = parameters.build_parser()
    config = vars(parser.parse_args(['--n_epochs', '3']))
    del config['pil_resampling']
    argv = ['--resume', 'run', '--n_epochs', '5']
    resumed = options_for_resume(resumable(config), parser.parse_args(argv), parameters.explicit_flags(parser, argv),
                                 'run/last.pth')
    assert resumed.pil_resampling is True and resumed.full_decode is False


def small_training_state(seed):
    from run_folder.resume import TrainingState
    from run_folder.summary import RunSummary
    from engine.teacher import make_teacher

    torch.manual_seed(seed)
    model, criterion = torch.nn.Linear(4, 3), torch.nn.Linear(1, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *criterion.parameters()], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1], gamma=0.5)
    return TrainingState(model, make_teacher(model), criterion, optimizer, scheduler,
                         RunSummary(['e_recall@1'], config={'seed': seed}))


def assert_same_state(got, expected, where):
    """Nested state dicts alike: the same keys and structure, every tensor equal to the bit and of the same dtype."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype and torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same_state(got[key], expected[key], f'{where}[{key!r}]')
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for index, (got_item, expected_item) in enumerate(zip(got, expected)):
            assert_same_state(got_item, expected_item, f'{where}[{index}]')
    else:
        assert got == expected, where


@pytest.mark.parametrize('step', [0, 3])
def test_training_state_saves_and_restores_everything(tmp_path, step):
    from run_folder.checkpoint import read_checkpoint
    from engine.training import EpochProgress

    saved = small_training_state(seed=1)
    saved.model(torch.randn(2, 4)).sum().backward()
    saved.optimizer.step()
    saved.scheduler.step()
    with torch.no_grad():
        saved.teacher.weight.add_(1.0)  # mid-epoch the teacher is the last epoch's student
    saved.summary.add_epoch({'epoch': 0, 'loss': 1.0, 'e_recall@1': 0.5})
    saved.save(tmp_path / 'last.pth', 1, EpochProgress(step=step), 'wandb-id')
    after_save = torch.rand(3)

    restored = small_training_state(seed=2)
    epoch, progress, online_id = restored.restore(read_checkpoint(tmp_path / 'last.pth'))
    assert (epoch, progress.step, online_id) == (1, step, 'wandb-id')
    assert torch.equal(torch.rand(3), after_save), 'the RNGs continue where the saved run was'
    for name in ('model', 'criterion', 'optimizer', 'scheduler'):
        assert_same_state(getattr(restored, name).state_dict(), getattr(saved, name).state_dict(), name)
    expected_teacher = saved.teacher if step else saved.model  # at an epoch's end the teacher equals the student
    assert torch.equal(restored.teacher.weight, expected_teacher.weight)
    assert restored.summary.history == saved.summary.history and restored.summary.config == {'seed': 1}
