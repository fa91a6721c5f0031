"""torchrun on the CPU (gloo, 2 processes): the same step as one process, one run folder, sharded evaluation."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import distributed_worker
from runs import ROOT, TINY_ARCH, read_summary, run_main, tiny_run_flags
from plumbing import distributed
from plumbing.stop_signals import StopSignals

WORKER = os.path.join(ROOT, 'tests', 'distributed_worker.py')


class Torchrun:
    """`torchrun --standalone --nproc_per_node=<processes> <args>` (a free port of its own), from the repository.

    Each rank's stdout and stderr go to files of their own (torchrun's --log-dir and --redirects), so that a failure
    shows torchrun's output and every rank's: report(). Leaving the `with` block, or a timeout, stops a torchrun still
    running, workers included (torchrun starts them in sessions of their own and passes its SIGTERM on to them).
    """

    def __init__(self, log_dir, *args, processes=2):
        self.log_dir, self.processes, self.output = log_dir, processes, ''
        environment = {**os.environ, 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}',
                   f'--log-dir={log_dir}', '--redirects=3', *map(str, args)]
        self.launcher = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        if self.launcher.poll() is None:
            self.stop()

    @property
    def returncode(self):
        return self.launcher.returncode

    def wait(self, timeout):
        """Wait for torchrun to end; after `timeout` s stop it and fail with everyone's output."""
        try:
            self.output = self.launcher.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f'torchrun still ran after {timeout} s\n{self.report()}') from None
        return self

    def stop(self):
        self.launcher.terminate()  # torchrun signals its workers, and kills those still there 30 s later
        try:
            self.output = self.launcher.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.output = self.launcher.communicate()[0]

    def rank_output(self, rank, stream='stdout'):
        """What rank `rank` wrote to `stream` ('stdout' or 'stderr')."""
        paths = sorted(glob.glob(os.path.join(self.log_dir, '*', 'attempt_*', str(rank), f'{stream}.log')))
        return ''.join(open(path, errors='replace').read() for path in paths)

    def report(self, tail=3000):
        """torchrun's exit code and output, then each rank's last stdout and stderr: a failed test's message."""
        parts = [f'torchrun, exit code {self.returncode}:\n{self.output[-tail:]}']
        for rank in range(self.processes):
            for stream in ('stdout', 'stderr'):
                parts.append(f'rank {rank} {stream}:\n{self.rank_output(rank, stream)[-tail:]}')
        return '\n'.join(parts)


def torchrun(log_dir, *args, timeout=240):
    """A finished Torchrun of `args`."""
    with Torchrun(log_dir, *args) as run:
        return run.wait(timeout)


STEP_CASES = ('resnet18_frozen_normalize', 'vit_tiny_patch16_224_normalize',
              'resnet18_frozen_normalize:quadruplet_obd_sd', 'resnet18_frozen_normalize:proxynca_obd_sd')
"""The networks and losses of the one-step comparison: quadruplet mines its triplets and draws its fourth samples
(every process must draw what one would), a proxy loss learns parameters of its own."""


@pytest.mark.slow
def test_two_processes_take_the_one_process_step(make_cub200, tmp_path):
    data = make_cub200(n_classes=8, per_class=2)
    distributed_worker.step(str(data), str(tmp_path / 'alone'), STEP_CASES)  # one process: this one
    run = torchrun(tmp_path / 'torchrun', WORKER, 'step', data, tmp_path / 'pair', *STEP_CASES)
    assert run.returncode == 0, run.report()
    for case in STEP_CASES:
        alone, pair, pair_rank1 = (torch.load(tmp_path / name, weights_only=True)
                                   for name in (f'alone.{case}', f'pair.{case}', f'pair.{case}.rank1'))
        assert alone['loss_kd'] > 0  # the teacher term is on, and part of the comparison
        for key in ('loss', 'loss_rank', 'loss_kd'):
            assert pair[key] == pytest.approx(alone[key], rel=1e-5), (case, key)
            assert pair_rank1[key] == pair[key], (case, key)  # every rank logs the loss of the whole global batch
        assert alone['before'].keys() == pair['before'].keys()
        moved = 0
        for name, start in alone['before'].items():
            torch.testing.assert_close(pair['before'][name], start)
            update, pair_update = alone['after'][name] - start, pair['after'][name] - start
            if update.is_floating_point() and update.abs().max() > 0:
                moved += 1
                torch.testing.assert_close(pair_update, update, rtol=1e-3, atol=1e-3 * update.abs().max().item())
        assert moved > 50, case  # the step changed the weights (convolutions or attention, norms, head)
        for name, start in alone['criterion_before'].items():  # the loss's own parameters: the same step, every rank
            torch.testing.assert_close(pair['criterion_before'][name], start)
            update = alone['criterion_after'][name] - start
            assert update.abs().max() > 0, (case, name)
            torch.testing.assert_close(pair['criterion_after'][name] - start, update, rtol=1e-3,
                                       atol=1e-3 * update.abs().max().item())
            assert torch.equal(pair_rank1['criterion_after'][name], pair['criterion_after'][name]), (case, name)


@pytest.mark.slow
def test_two_processes_evaluate_query_and_gallery_as_one_and_gather_every_sample_once_in_order(make_inshop, tmp_path):
    import json

    data = make_inshop(n_train_items=2, n_eval_items=4, query_per_item=2, gallery_per_item=3)  # 8 and 12: padded
    alone, pair = tmp_path / 'alone.npz', tmp_path / 'pair.npz'
    distributed_worker.evaluate(str(data), str(alone))  # one process: this one
    run = torchrun(tmp_path / 'torchrun', WORKER, 'evaluate', data, pair, 7)  # 4 + 3 items: rank 1's shard is padded
    assert run.returncode == 0, run.report()
    alone, pair = np.load(alone), np.load(pair)
    assert sorted(alone.files) == ['gallery_0', 'gallery_1', 'metrics', 'query_0', 'query_1']
    for name in ('query_0', 'gallery_0'):
        np.testing.assert_allclose(pair[name], alone[name], rtol=1e-5, atol=1e-6)
    for name in ('query_1', 'gallery_1'):
        np.testing.assert_array_equal(pair[name], alone[name])
    metrics = json.loads(str(alone['metrics']))
    assert set(metrics) == {'e_recall@1', 'e_recall@10', 'e_recall@20', 'e_recall@30', 'e_recall@40', 'e_recall@50',
                            'mAP@R'}
    assert json.loads(str(pair['metrics'])) == pytest.approx(metrics)

    gathered = np.load(tmp_path / 'pair.npz.shards.npz')
    np.testing.assert_array_equal(gathered['indices'], np.arange(7))
    np.testing.assert_array_equal(gathered['features'], np.stack([np.arange(7) * 10.0, np.arange(7) * 10.0 + 1], 1))


@pytest.mark.parametrize('main_process', [True, False])
def test_progress_bars_only_on_the_main_process(main_process, monkeypatch):
    import evaluation.embeddings
    import engine.training

    from tqdm import tqdm

    shown = []

    def recording_tqdm(iterable, disable=None, **kwargs):
        shown.append(disable is None)  # None: tqdm shows the bar on a terminal
        return tqdm(iterable, disable=disable, **kwargs)

    monkeypatch.setattr(distributed, 'is_main', lambda: main_process)
    for module in (evaluation.embeddings, engine.training):
        monkeypatch.setattr(module, 'tqdm', recording_tqdm)
    model = torch.nn.Linear(3 * 2 * 2, 4)
    network = torch.nn.Sequential(torch.nn.Flatten(), model)
    batch = (torch.tensor([0, 1]), torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.arange(2))
    evaluation.embeddings.extract_embeddings(network, [batch], 'cpu')
    criterion = lambda embeddings, labels, **kwargs: embeddings.square().mean()  # noqa: E731
    criterion.needs_teacher, criterion.terms = (lambda epoch: False), {}
    engine.training.train_one_epoch(network, None, criterion, torch.optim.SGD(model.parameters(), lr=0.1),
                                       [batch], torch.device('cpu'), 0, engine.training.EpochProgress(),
                                       StopSignals(), skip_nonfinite=False)
    assert shown == [main_process, main_process]


def test_shards_cover_a_dataset_once():
    shards = [list(distributed.ShardSampler(10, 3, rank)) for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(distributed.ShardSampler(10, 3, rank)) for rank in range(3)] == [4, 3, 3]


def digits_run(tmp_path, epochs):
    """main.py's arguments for an OBD-SD digits run of `epochs` into tmp_path/runs: --bs 96 makes 9 steps an epoch
    instead of the demo's 28, each one all-reduce of the gradients between the processes (with the demo's ResNet18,
    11M of them, most of a test's time: the tiny network instead)."""
    return ['main.py', '--dataset', 'digits', '--PSD', '--OBDP', '--n_epochs', epochs, '--arch', TINY_ARCH,
            '--not_pretrained', '--bs', 96, '--image_size', 16, '--embed_dim', 16, '--source', tmp_path / 'data',
            '--save_path', tmp_path / 'runs']


@pytest.mark.slow
def test_two_process_digits_run_writes_one_complete_run_folder(tmp_path):
    run = torchrun(tmp_path / 'torchrun', *digits_run(tmp_path, epochs=2))
    assert run.returncode == 0, run.report()
    folders = os.listdir(tmp_path / 'runs' / 'digits')
    assert folders == ['run'], run.report()
    folder = tmp_path / 'runs' / 'digits' / 'run'
    summary = read_summary(folder)
    assert [entry['epoch'] for entry in summary['history']] == [0, 1]
    assert summary['history'][1]['loss_kd'] > 0
    for entry in summary['history']:
        assert 0 <= entry['e_recall@1'] <= 1 and 0 <= entry['nmi'] <= 1
    assert {'best_e_recall@1.pth', 'best_nmi.pth', 'last.pth', 'log.txt', 'summary.json'} <= set(os.listdir(folder))
    assert run.rank_output(0).count('epoch 1 |') == 1 and 'epoch 1 |' not in run.rank_output(1), run.report()


@pytest.mark.parametrize('flags, message', [
    (['--bs', 24, '--samples_per_class', 8], 'multiple of 2 x --samples_per_class 8 = 16'),
    (['--dist_backend', 'nccl'], '--dist_backend nccl needs GPUs'),
])
def test_bad_distributed_set_up_is_a_one_line_error(flags, message, make_cub200, tmp_path, monkeypatch, capsys):
    if '--dist_backend' in flags and torch.cuda.is_available():
        pytest.skip('this machine has GPUs')
    monkeypatch.setenv('WORLD_SIZE', '2')  # as torchrun --nproc_per_node=2 sets it; no process group is joined
    args = tiny_run_flags(make_cub200(), tmp_path, **{'--bs': 16})
    assert run_main(*args, *flags) == 2
    error = capsys.readouterr().err
    assert message in error and error.count('\n') == 1
    assert not (tmp_path / 'cub200').exists()


@pytest.mark.slow
def test_an_error_on_rank_0_alone_ends_every_rank(make_cub200, tmp_path):
    blocker = tmp_path / 'not_a_folder'
    blocker.write_text('a file where --save_path wants a folder')
    run = torchrun(tmp_path / 'torchrun', 'main.py', *tiny_run_flags(make_cub200(), blocker,
                                                                     **{'--dist_backend': 'gloo'}), timeout=120)
    assert run.returncode != 0
    # rank 0 met the error creating the run folder; rank 1, waiting for the folder's name, reports it too
    for rank in (0, 1):
        assert run.rank_output(rank, 'stderr').count(f'error: cannot create {blocker}') == 1, run.report()


def worker_of_rank(launcher, rank):
    """The pid of torchrun's worker process of `rank` (a child of the launcher whose environment says RANK=rank)."""
    for pid in os.listdir('/proc'):
        try:
            with open(f'/proc/{pid}/stat') as stream:
                parent = int(stream.read().rsplit(')', 1)[1].split()[1])
            with open(f'/proc/{pid}/environ', 'rb') as stream:
                environment = stream.read().split(b'\0')
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and f'RANK={rank}'.encode() in environment:
            return int(pid)
    return None


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='finds the worker processes in /proc')
@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_and_the_run_resumes(tmp_path):
    folder = tmp_path / 'runs' / 'digits' / 'run'
    with Torchrun(tmp_path / 'torchrun', *digits_run(tmp_path, epochs=3)) as run:
        deadline = time.time() + 180
        while not (folder / 'last.pth').exists():  # epoch 0 is done: the signal comes in epoch 1
            assert run.launcher.poll() is None and time.time() < deadline, run.report()
            time.sleep(0.05)
        os.kill(worker_of_rank(run.launcher.pid, 1), signal.SIGTERM)
        run.wait(timeout=180)
    assert run.returncode != 0
    log = (folder / 'log.txt').read_text()
    assert 'stopped by SIGTERM' in log, run.report()  # rank 0, which got no signal, stopped and said why
    state = torch.load(folder / 'last.pth', weights_only=True)['training_state']
    assert (state['epoch'], state['progress']['step'] > 0) in ((1, True), (2, False))
    assert len(read_summary(folder)['history']) < 3

    run = torchrun(tmp_path / 'torchrun_resumed', 'main.py', '--resume', folder)
    assert run.returncode == 0, run.report()
    assert [entry['epoch'] for entry in read_summary(folder)['history']] == [0, 1, 2]
    assert os.listdir(tmp_path / 'runs' / 'digits') == ['run']
