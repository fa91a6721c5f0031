"""Code paths that only run on CUDA, tested on the CPU with torch's and faiss's device calls mocked: the random state
of this process's own GPU only, and faiss k-means on this process's GPU only. (`benchmarks/cuda_paths.py`, run by
`benchmarks/gpu_check.sh`, runs them on a real GPU.)"""
import logging

import numpy as np
import pytest
import torch

from evaluation import clustering
from plumbing import runtime


class FakeCuda:
    """torch.cuda as a process on cuda:`device` of a node with `count` GPUs sees it; records what is read and set."""

    def __init__(self, monkeypatch, device=1, count=4):
        self.device, self.read, self.set = device, [], []
        for name in ('get_rng_state_all', 'set_rng_state_all'):  # they touch every GPU of the node
            monkeypatch.setattr(torch.cuda, name, self.refuse(name))
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
        monkeypatch.setattr(torch.cuda, 'current_device', lambda: self.device)
        monkeypatch.setattr(torch.cuda, 'get_rng_state', self.get_rng_state)
        monkeypatch.setattr(torch.cuda, 'set_rng_state', self.set_rng_state)

    @staticmethod
    def refuse(name):
        def refused(*args, **kwargs):
            raise AssertionError(f'torch.cuda.{name} called')
        return refused

    @staticmethod
    def state_of(device):
        return torch.full((16,), device, dtype=torch.uint8)

    def get_rng_state(self, device='cuda'):
        self.read.append(device)
        return self.state_of(device)

    def set_rng_state(self, state, device='cuda'):
        self.set.append((state.tolist(), device))


def test_the_random_state_saved_is_this_process_devices_only(monkeypatch):
    cuda = FakeCuda(monkeypatch, device=1)
    states = runtime.rng_states()
    assert cuda.read == [1], 'only the current device is read'
    assert torch.equal(states['cuda'], FakeCuda.state_of(1))
    runtime.set_rng_states(states)
    assert cuda.set == [([1] * 16, 1)], 'and only the current device is set'


@pytest.mark.parametrize('device', [0, 2])
def test_an_old_checkpoints_list_of_every_gpus_state_restores_this_devices_entry(monkeypatch, device):
    cuda = FakeCuda(monkeypatch, device=device)
    states = runtime.rng_states()
    states['cuda'] = [FakeCuda.state_of(k) for k in range(4)]  # as get_rng_state_all() saved it, 4 GPUs
    runtime.set_rng_states(states)
    assert cuda.set == [([device] * 16, device)]


def test_an_old_checkpoint_from_a_node_with_more_gpus_resumes_on_one_with_fewer(monkeypatch, caplog):
    cuda = FakeCuda(monkeypatch, device=2, count=3)
    states = runtime.rng_states()
    states['cuda'] = [FakeCuda.state_of(0), FakeCuda.state_of(1)]  # saved where cuda:2 did not exist
    with caplog.at_level(logging.WARNING):
        runtime.set_rng_states(states)
    assert cuda.set == [] and 'none for cuda:2' in caplog.text
    states['cuda'] = [FakeCuda.state_of(k) for k in range(8)]  # 8 GPUs then, 3 now: this device's entry
    runtime.set_rng_states(states)
    assert cuda.set == [([2] * 16, 2)]


def test_a_checkpoint_without_cuda_state_resumes_on_a_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    states = runtime.rng_states()
    del states['cuda']  # saved on a CPU
    runtime.set_rng_states(states)
    assert cuda.set == []


class FakeFaissGpu:
    """faiss as a process on cuda:`device` with `count` GPUs sees it; index_cpu_to_gpu keeps the CPU index (so that
    k-means still runs here) and records where it was asked to place it."""

    def __init__(self, monkeypatch, device=1, count=4):
        FakeCuda(monkeypatch, device=device, count=count)
        self.placed = []
        monkeypatch.setattr(clustering.faiss, 'get_num_gpus', lambda: count)
        monkeypatch.setattr(clustering.faiss, 'StandardGpuResources', lambda: 'resources')
        monkeypatch.setattr(clustering.faiss, 'index_cpu_to_gpu', self.index_cpu_to_gpu)
        monkeypatch.setattr(clustering.faiss, 'index_cpu_to_all_gpus', FakeCuda.refuse('faiss.index_cpu_to_all_gpus'))

    def index_cpu_to_gpu(self, resources, device, index):
        self.placed.append((resources, device, type(index).__name__, index.d))
        return index


def clustered_features(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 8)) * 10
    return (centres[np.arange(100) % 5] + rng.normal(size=(100, 8))).astype(np.float32)


def test_faiss_kmeans_on_the_gpu_uses_this_processs_device_only(monkeypatch):
    features = clustered_features()
    on_cpu = clustering.kmeans_assignment(features, 5, seed=3)
    faiss_gpu = FakeFaissGpu(monkeypatch, device=1)
    on_gpu = clustering.kmeans_assignment(features, 5, seed=3, use_gpu=True)
    assert faiss_gpu.placed == [('resources', 1, 'IndexFlatL2', 8)], 'one flat L2 index, on cuda:1'
    assert np.array_equal(on_gpu, on_cpu), 'the same k-means (the same index, here kept on the CPU)'


def test_faiss_kmeans_without_a_faiss_gpu_stays_on_the_cpu(monkeypatch):
    faiss_gpu = FakeFaissGpu(monkeypatch, device=0, count=0)
    clustering.kmeans_assignment(clustered_features(), 5, use_gpu=True)
    assert faiss_gpu.placed == []


def test_the_gpu_checks_script_reports_pass_skip_and_fail_per_check(monkeypatch, capsys):
    """benchmarks/cuda_paths.py (gpu_check.sh's first step) on the CPU: what can run passes, what needs CUDA is
    skipped, and a failing check is one FAIL line and exit status 1 while the others still run."""
    from benchmarks import cuda_paths

    assert cuda_paths.main(['--cpu', '--only', 'deterministic_networks', 'rng_this_device', 'faiss_this_device']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(':')[0] for line in lines] == ['PASS deterministic_networks', 'SKIP rng_this_device',
                                                      'SKIP faiss_this_device', 'cuda paths on cpu']

    def broken(device, quick):
        raise RuntimeError('adaptive_max_pool2d_backward_cuda does not have a deterministic implementation')
    monkeypatch.setitem(cuda_paths.CHECKS, 'deterministic_probe', broken)
    assert cuda_paths.main(['--cpu', '--only', 'deterministic_probe', 'rng_this_device']) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('FAIL deterministic_probe: RuntimeError: adaptive_max_pool2d_backward_cuda')
    assert lines[1].startswith('SKIP rng_this_device') and lines[2] == 'cuda paths on cpu: 1 failed'


def test_the_gpu_check_of_learned_loss_parameters_passes_on_the_cpu(capsys):
    """benchmarks/cuda_paths.py's check of the losses with parameters of their own, in its CPU form (on a GPU it also
    runs the CUDA kernels and the fused Adam step)."""
    from benchmarks import cuda_paths

    assert cuda_paths.main(['--cpu', '--only', 'learned_loss_parameters']) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith('PASS learned_loss_parameters: ') and 'proxyanchor' in line and 'softtriplet' in line
