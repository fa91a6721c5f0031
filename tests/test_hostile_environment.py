"""Faults a user's environment brings: full disks, killed and concurrent processes, odd images, missing GPUs,
unwritable caches, `~` in paths, umasks. Each gives a one-line error or the right behaviour."""
import errno
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import parameters
import Test_pretrained_models
from runs import ROOT, one_line_error, read_summary, run_main, tiny_run_flags
from plumbing.errors import UserError
from plumbing.files import atomic_write_bytes
from run_folder.lock import LOCK_FILE, RunFolderLock


@pytest.fixture
def finished_run(cub, tmp_path):
    """A one-epoch run folder, finished, with its last.pth."""
    assert run_main(*tiny_run_flags(cub, tmp_path, **{'--n_epochs': 1})) == 0
    return tmp_path / 'cub200' / 'tiny'


def temporary_files(folder):
    return [name for name in os.listdir(folder) if name.endswith('.tmp')]


@pytest.mark.slow
def test_diverged_weights_stop_the_run_although_the_loss_stays_finite(cub, tmp_path, capsys, monkeypatch):
    three_steps_an_epoch = {'--bs': 4, '--samples_per_class': 2, '--n_epochs': 1}
    assert run_main(*tiny_run_flags(cub, tmp_path, **three_steps_an_epoch)) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    last = (folder / 'last.pth').read_bytes()
    original_step = torch.optim.Adam.step

    def step_to_nan(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                for parameter in group['params']:
                    parameter.fill_(float('nan'))
        return result

    monkeypatch.setattr(torch.optim.Adam, 'step', step_to_nan)
    message = one_line_error(capsys, run_main('--resume', folder, '--n_epochs', '2'))
    assert 'the loss or the embeddings became non-finite in epoch 1, step 1' in message
    assert f'the last complete checkpoint {folder / "last.pth"} is intact' in message
    assert (folder / 'last.pth').read_bytes() == last


@pytest.mark.slow
def test_diverged_weights_found_by_the_evaluation(finished_run, capsys, monkeypatch):
    last = (finished_run / 'last.pth').read_bytes()
    monkeypatch.setattr(torch.optim.Adam, 'step', lambda self, *args, **kwargs: [
        parameter.detach().fill_(float('inf')) for group in self.param_groups for parameter in group['params']])
    message = one_line_error(capsys, run_main('--resume', finished_run, '--n_epochs', '2'))
    assert 'contain nan or inf values' in message and 'last.pth is intact' in message
    assert (finished_run / 'last.pth').read_bytes() == last


def test_non_finite_weights_in_evaluation_are_a_one_line_error(cub, tmp_path):
    import architectures
    from run_folder.checkpoint import save_checkpoint

    model = architectures.build('resnet18_normalize', 16, pretrained=False)
    with torch.no_grad():
        model.model.last_linear.weight.fill_(float('inf'))
    path = tmp_path / 'diverged.pth'
    save_checkpoint(str(path), model, {'arch': 'resnet18_normalize', 'embed_dim': 16}, 0, {})
    with pytest.raises(UserError, match='contain nan or inf values'):
        Test_pretrained_models.main(['--dataset', 'cub200', '--source', str(cub), '--checkpoint', str(path),
                                     '--kernels', '0', '--image_size', '32'])


def disk_full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_full_disk_names_the_file_and_keeps_the_last_checkpoint(finished_run, capsys, monkeypatch):
    last = (finished_run / 'last.pth').read_bytes()
    monkeypatch.setattr(os, 'fsync', disk_full)
    message = one_line_error(capsys, run_main('--resume', finished_run, '--n_epochs', '2'))
    assert 'No space left on device' in message and f'cannot write {finished_run}{os.sep}' in message
    assert f'the last complete checkpoint {finished_run / "last.pth"} is intact' in message
    assert f'--resume {finished_run}' in message
    assert (finished_run / 'last.pth').read_bytes() == last
    assert temporary_files(finished_run) == []
    assert not (finished_run / LOCK_FILE).exists()


def test_full_disk_before_the_first_checkpoint(cub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, 'fsync', disk_full)
    message = one_line_error(capsys, run_main(*tiny_run_flags(cub, tmp_path, **{'--n_epochs': 1})))
    folder = tmp_path / 'cub200' / 'tiny'
    assert f'no checkpoint of {folder} was complete yet: make room, then start the run again' in message
    assert sorted(os.listdir(folder)) == ['log.txt']


def test_test_pretrained_models_out_into_a_missing_folder(tmp_path):
    out = tmp_path / 'no' / 'such' / 'dir' / 'results.json'
    with pytest.raises(UserError, match=f'--out {out}: the folder {out.parent} does not exist'):
        Test_pretrained_models.main(['--dataset', 'digits', '--checkpoint', str(tmp_path / 'missing.pth'),
                                     '--out', str(out)])


def test_digits_with_an_unwritable_cache(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    monkeypatch.setenv('XDG_CACHE_HOME', str(blocker / 'cache'))
    code = run_main('--dataset', 'digits', '--save_path', tmp_path / 'runs', '--n_epochs', '1')
    message = one_line_error(capsys, code)
    assert 'cannot write the digits images' in message and 'XDG_CACHE_HOME' in message


def test_digits_export_failing_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    from datasets import digits

    def write_some_then_fail(images_dir):
        os.makedirs(images_dir)
        disk_full()

    monkeypatch.setattr(digits, 'write_images', write_some_then_fail)
    code = run_main('--dataset', 'digits', '--source', tmp_path / 'digits', '--save_path', tmp_path / 'runs')
    assert 'No space left on device' in one_line_error(capsys, code)
    assert os.listdir(tmp_path / 'digits') == []


@pytest.mark.parametrize('mode, suffix', [('I;16', 'png'), ('I', 'tif')])
def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path, mode, suffix):
    from datasets.image_dataset import load_rgb

    values = np.linspace(0, 65535, 48 * 48).round().astype(np.uint16).reshape(48, 48)
    path = tmp_path / f'gray16.{suffix}'
    Image.fromarray(values if mode == 'I;16' else values.astype(np.int32)).save(path)
    assert Image.open(path).mode == mode
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (48, 48, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[..., 0], np.round(values / 257).astype(np.uint8))
    assert (rgb == 255).mean() < 0.01


def test_gpu_asked_for_without_one_warns(monkeypatch, caplog):
    from plumbing.runtime import select_device

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with caplog.at_level(logging.WARNING):
        assert select_device([3]) == torch.device('cpu')
    assert '--gpu 3 was asked for, but torch sees no CUDA device' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert select_device([0]) == torch.device('cpu')
    assert caplog.text == '', 'the default --gpu 0 runs on the CPU without a warning'


@pytest.mark.slow
def test_temporary_files_of_a_killed_write_are_removed_on_resume(finished_run, capsys):
    stale = finished_run / '.best_nmi.pth.k3x9_q2a.tmp'
    stale.write_bytes(b'half a checkpoint')
    users_file = finished_run / 'notes.tmp'
    users_file.write_text('mine')
    assert run_main('--resume', finished_run, '--n_epochs', '2') == 0
    assert not stale.exists() and users_file.read_text() == 'mine'
    assert 'removed 1 temporary files that an interrupted write left' in capsys.readouterr().out


HOLD_LOCK = '''
import sys, time
sys.path.insert(0, {root!r})
from run_folder.lock import RunFolderLock
lock = RunFolderLock({folder!r})
print('locked', flush=True)
time.sleep(120)
'''


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_until_the_first_dies(finished_run, capsys):
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK.format(root=ROOT, folder=str(finished_run))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        before = sorted(os.listdir(finished_run))
        message = one_line_error(capsys, run_main('--resume', finished_run, '--n_epochs', '2'))
        assert f'{finished_run} is in use by another process (pid {holder.pid} on host ' in message
        assert sorted(os.listdir(finished_run)) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (finished_run / LOCK_FILE).exists(), 'SIGKILL leaves the file, but not the lock'
    assert run_main('--resume', finished_run, '--n_epochs', '2') == 0
    assert [entry['epoch'] for entry in read_summary(finished_run)['history']] == [0, 1]
    assert not (finished_run / LOCK_FILE).exists(), 'released on exit'


def test_lock_is_exclusive_and_released(tmp_path):
    first = RunFolderLock(str(tmp_path))
    assert f'pid {os.getpid()} on host ' in (tmp_path / LOCK_FILE).read_text()
    with pytest.raises(UserError, match=f'in use by another process \\(pid {os.getpid()} '):
        RunFolderLock(str(tmp_path))
    first.release()
    RunFolderLock(str(tmp_path)).release()
    assert os.listdir(tmp_path) == []


def test_group_cannot_leave_save_path(cub, tmp_path, capsys):
    code = run_main(*tiny_run_flags(cub, tmp_path / 'runs', **{'--group': '../../escaped_run'}))
    assert 'one folder name inside --save_path' in one_line_error(capsys, code)
    assert not (tmp_path / 'escaped_run').exists() and not (tmp_path / 'runs').exists()
    code = run_main(*tiny_run_flags(cub, tmp_path / 'runs', **{'--group': 'a/b'}))
    assert 'pass e.g. --group a_b' in one_line_error(capsys, code)
    code = run_main(*tiny_run_flags(cub, tmp_path / 'runs', **{'--group': 'a/b', '--savename': '..'}))
    assert '--savename ..' in one_line_error(capsys, code)


@pytest.mark.slow
def test_tilde_is_expanded_in_every_path_flag(cub, tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    parser = Test_pretrained_models.build_parser()
    opt = parameters.parse_args(['--source', '~/data', '--save_path', '~/runs', '--resume', '~/runs/r',
                                 '--pretrained_path', '~/w.pth', '--checkpoint', '~/c.pth', '--checkpoint_root',
                                 '~/released', '--out', '~/results.json'], parser)
    for flag in ('source_path', 'save_path', 'resume', 'pretrained_path', 'checkpoint', 'checkpoint_root', 'out'):
        assert getattr(opt, flag).startswith(str(tmp_path) + os.sep), flag
    assert run_main(*tiny_run_flags(cub, '~/runs', **{'--n_epochs': 1})) == 0
    assert (tmp_path / 'runs' / 'cub200' / 'tiny' / 'last.pth').is_file()
    assert not os.path.exists(os.path.join(ROOT, '~')) and not os.path.exists('~')


class RunsShell:
    """Unpickling this would run a shell command (torch 2.14 calls it 'unsupported GLOBAL posix.system')."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.mark.slow
def test_code_carrying_and_text_checkpoints_are_refused_in_one_line(finished_run, tmp_path, capsys):
    marker = tmp_path / 'code_ran'
    shell = tmp_path / 'shell.pth'
    torch.save({'state_dict': {}, 'payload': RunsShell(marker)}, shell)
    text = tmp_path / 'notes.pth'
    text.write_text('model trained on cub200, recall 0.7\n' * 50)
    for path, expected in ((shell, 'carries pickled Python objects (posix.system) whose loading could run code'),
                           (text, 'is not a PyTorch checkpoint (neither a zip archive nor a pickle)')):
        message = one_line_error(capsys, run_main('--resume', path))
        assert expected in message and 'weights_only' not in message
        with pytest.raises(UserError, match=expected.replace('(', r'\(').replace(')', r'\)')):
            Test_pretrained_models.main(['--dataset', 'cub200', '--source', str(finished_run), '--checkpoint',
                                         str(path)])
    assert not marker.exists()


def test_resume_auto_names_a_newer_run_without_a_checkpoint(tmp_path):
    from run_folder.folder import resume_checkpoint

    older = tmp_path / 'cub200' / 'g'
    older.mkdir(parents=True)
    (older / 'last.pth').write_bytes(b'')
    newer = tmp_path / 'cub200' / 'g_1'
    newer.mkdir()
    past = time.time() - 60
    os.utime(older / 'last.pth', (past, past))
    with pytest.raises(UserError, match=f'{newer}, has no last.pth .* --resume {older}'):
        resume_checkpoint('auto', str(tmp_path), 'cub200', 'g')
    os.utime(newer, (past - 60, past - 60))  # an abandoned start, older than g's last write: g is the newest
    assert resume_checkpoint('auto', str(tmp_path), 'cub200', 'g') == str(older / 'last.pth')


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
@pytest.mark.slow
def test_run_files_follow_the_umask(cub, tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(str(tmp_path / 'alone.json'), b'{}')
        assert run_main(*tiny_run_flags(cub, tmp_path, **{'--n_epochs': 1})) == 0
    finally:
        os.umask(previous)
    folder = tmp_path / 'cub200' / 'tiny'
    written = [tmp_path / 'alone.json'] + [folder / name for name in os.listdir(folder)]
    assert {'summary.json', 'last.pth', 'curves.png', 'log.txt', 'metrics.csv'} <= set(os.listdir(folder))
    for path in written:
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, path


CRASH_AT_SECOND_STEP = '''
import runpy, sys
sys.path.insert(0, {root!r})
import engine.training as training
steps = []
checked = training.step_is_nonfinite
def failing(loss, embeddings):
    steps.append(1)
    if len(steps) == 2:
        raise RuntimeError('a bug at the second step')
    return checked(loss, embeddings)
training.step_is_nonfinite = failing
sys.argv = ['main.py'] + {argv!r}
runpy.run_path({main!r}, run_name='__main__')
'''


@pytest.mark.slow
def test_a_bug_during_training_with_workers_exits_with_its_traceback_instead_of_hanging(cub, tmp_path):
    # Workers ignore SIGTERM (to outlive a cluster's); an uncaught exception used to leave them running and the
    # process waiting for them at exit for ever.
    argv = tiny_run_flags(str(cub), str(tmp_path), **{'--kernels': 1})
    script = CRASH_AT_SECOND_STEP.format(root=ROOT, argv=argv, main=os.path.join(ROOT, 'main.py'))
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=180,
                            env={**os.environ, 'WANDB_MODE': 'disabled'})
    assert result.returncode == 1
    assert 'Traceback' in result.stderr and result.stderr.rstrip().endswith('RuntimeError: a bug at the second step')


@pytest.mark.parametrize('raised, code, stderr', [
    (None, 0, ''), (UserError('bad\n flag'), 2, 'error: bad flag\n'), (RuntimeError('bug'), 1, 'RuntimeError: bug'),
    (KeyboardInterrupt(), 130, 'KeyboardInterrupt')])
def test_exit_code_of_a_script(raised, code, stderr, capsys):
    from plumbing.errors import exit_code

    def main():
        if raised is not None:
            raise raised
        return 0

    assert exit_code(main) == code
    assert capsys.readouterr().err.rstrip('\n').endswith(stderr.rstrip('\n'))


class Workers:
    """A loader's workers, as far as exit_code is concerned: child processes stopped when their owner is freed."""

    def __init__(self):
        self.process = multiprocessing.Process(target=time.sleep, args=(120,), daemon=True)
        self.process.start()

    def __del__(self):
        self.process.terminate()
        self.process.join()


def test_a_failed_main_leaves_no_loader_workers_behind(capsys):
    """The loader of a failed main() can sit in a reference cycle, which only the collector frees: exit_code runs it
    when child processes are alive, so they are stopped before the script exits (the end-to-end case with a real
    loader: test_a_bug_during_training_with_workers_exits_with_its_traceback_instead_of_hanging)."""
    from plumbing.errors import exit_code

    def main():
        held = {'workers': Workers()}
        held['self'] = held
        raise RuntimeError('bug')

    assert multiprocessing.active_children() == []
    assert exit_code(main) == 1
    assert multiprocessing.active_children() == [], 'the failed main\'s workers outlived it'
    assert capsys.readouterr().err.rstrip().endswith('RuntimeError: bug')
