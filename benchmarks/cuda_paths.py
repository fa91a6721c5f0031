"""The code paths that only run on CUDA, exercised on a real GPU: one line per check, PASS, FAIL (and why) or SKIP
(and why), exit status 1 when any check fails. The tests run them on a CPU with the device calls mocked
(tests/test_cuda_paths.py, tests/test_architectures.py, tests/test_training_step.py).

- deterministic_networks: under torch.use_deterministic_algorithms(True) (--deterministic) every built-in network
  makes a forward and backward pass in float32 and under --amp (the _double ResNets and BN-Inception with amax
  pooling, a timm ViT with scaled_dot_product_attention), and amax gives adaptive_max_pool2d's values on CUDA.
- deterministic_probe: the probe run before training names adaptive_max_pool2d_backward_cuda for a network that
  uses it (torch's real CUDA error, in one line).
- rng_this_device: the random state saved is this device's only (get_rng_state_all is never called), it restores,
  and so does an older checkpoint's list of every GPU's state.
- faiss_this_device: k-means with --evaluate_on_gpu places its index on the current device and clusters as the CPU.
- deterministic_run: a digits run with --deterministic, a _double network and --evaluate_on_gpu, to its end.
- learned_loss_parameters: every loss with parameters of its own (proxies, class maps, centroids, beta) on the
  device: they stay there in float32, bfloat16 embeddings (as under --amp) give a float32 loss and gradients that
  match float64 on the CPU, under deterministic algorithms, and a fused Adam step moves them.

    python benchmarks/cuda_paths.py           # on a GPU machine (about a minute)
    python benchmarks/cuda_paths.py --cpu     # the parts a CPU can run (gpu_check.sh's dry check)
"""
import argparse
import copy
import os
import pathlib
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import architectures  # noqa: E402  (needs the repository root on the path)
import criteria  # noqa: E402
import parameters  # noqa: E402
from architectures.embedding_net import global_max_pool  # noqa: E402
from engine.optimization import build_optimizer  # noqa: E402
from engine.training import check_deterministic_backward  # noqa: E402
from evaluation import clustering  # noqa: E402
from plumbing import runtime  # noqa: E402
from plumbing.errors import UserError  # noqa: E402

CHECKS = {}


class Skip(Exception):
    """A check that cannot run here (no CUDA device, no faiss GPU)."""


def check(function):
    CHECKS[function.__name__] = function
    return function


def needs_cuda(device):
    if device.type != 'cuda':
        raise Skip('no CUDA device')


@check
def deterministic_networks(device, quick):
    size = 64 if quick else 224
    archs = ['resnet18_double_normalize'] if quick else [
        'resnet50_frozen_normalize_double', 'resnet50_frozen_normalize', 'resnet18_double_normalize',
        'bninception_frozen_normalize_double', 'vit_tiny_patch16_224_normalize']
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # as --deterministic sets it
    with runtime.deterministic_algorithms():
        for arch in archs:
            model = architectures.build(arch, 128, pretrained=False, image_size=size).to(device)
            for amp in (False, True):
                check_deterministic_backward(model, device, size, amp=amp, channels_last=amp)
            del model
        features = torch.randn(8, 2048, 7, 7, device=device)
        pooled = global_max_pool(features)
    assert torch.equal(pooled, F.adaptive_max_pool2d(features, 1)), 'amax differs from adaptive_max_pool2d'
    return f'{", ".join(archs)} at {size} px: forward and backward in float32 and --amp; amax == adaptive_max_pool2d'


class AuthorsDoublePool(nn.Module):
    """The authors' pooling (adaptive_max_pool2d), whatever the mode: what the probe must catch on CUDA."""
    arch = 'authors_double'

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, images):
        return F.adaptive_max_pool2d(self.conv(images), 1).flatten(1)


@check
def deterministic_probe(device, quick):
    needs_cuda(device)  # adaptive_max_pool2d's CPU backward is deterministic: nothing to catch there
    with runtime.deterministic_algorithms():
        try:
            check_deterministic_backward(AuthorsDoublePool().to(device), device, 32)
        except UserError as error:
            message = str(error)
        else:
            raise AssertionError('the probe passed a network with adaptive_max_pool2d')
    assert 'adaptive_max_pool2d' in message and '\n' not in message, message
    return message


@check
def rng_this_device(device, quick):
    needs_cuda(device)
    every_gpu = torch.cuda.get_rng_state_all

    def refused():
        raise AssertionError('torch.cuda.get_rng_state_all called')
    torch.cuda.get_rng_state_all = refused
    try:
        states = runtime.rng_states()
    finally:
        torch.cuda.get_rng_state_all = every_gpu
    assert isinstance(states['cuda'], torch.Tensor), type(states['cuda'])
    drawn = torch.rand(4, device=device)
    runtime.set_rng_states(states)
    assert torch.equal(torch.rand(4, device=device), drawn), 'the restored state draws otherwise'
    states['cuda'] = [torch.cuda.get_rng_state(k) for k in range(torch.cuda.device_count())]  # an old checkpoint's
    drawn = torch.rand(4, device=device)
    runtime.set_rng_states(states)
    assert torch.equal(torch.rand(4, device=device), drawn), 'the old format restores otherwise'
    return f'cuda:{torch.cuda.current_device()} of {torch.cuda.device_count()} GPU(s): saved, restored, old list too'


@check
def faiss_this_device(device, quick):
    needs_cuda(device)
    if clustering.faiss.get_num_gpus() == 0:
        raise Skip('faiss sees no GPU')
    placed = []
    to_gpu = clustering.faiss.index_cpu_to_gpu

    def recorded(resources, index_device, index):
        placed.append(to_gpu(resources, index_device, index))
        return placed[-1]
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(20, 64)) * 10)[np.arange(2000) % 20] + rng.normal(size=(2000, 64))
    clustering.faiss.index_cpu_to_gpu = recorded
    try:
        on_gpu = clustering.kmeans_assignment(features, 20, seed=1, use_gpu=True)
    finally:
        clustering.faiss.index_cpu_to_gpu = to_gpu
    on_cpu = clustering.kmeans_assignment(features, 20, seed=1)
    assert len(placed) == 1 and placed[0].getDevice() == torch.cuda.current_device(), 'index not on this device'
    agreement = clustering.nmi(on_cpu, on_gpu)
    assert agreement > 0.99, f'GPU and CPU k-means disagree: NMI {agreement:.4f}'
    return f'index on cuda:{placed[0].getDevice()}; NMI of GPU vs CPU clustering {agreement:.4f}'


@check
def deterministic_run(device, quick):
    epochs = 1 if quick else 2
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(ROOT / 'main.py'), '--dataset', 'digits', '--source', f'{folder}/digits',
                   '--save_path', f'{folder}/runs', '--arch', 'resnet18_normalize_double', '--deterministic',
                   '--PSD', '--OBDP', '--n_epochs', str(epochs), '--evaluate_on_gpu', '--group', 'cuda_paths']
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                                env={**os.environ, 'WANDB_MODE': 'disabled'})
    assert result.returncode == 0, f'exit {result.returncode}: {result.stderr.strip()[-600:]}'
    return f'{" ".join(command[2:])}: exit 0'


@check
def learned_loss_parameters(device, quick):
    n_classes, embed_dim = (20, 16) if quick else (100, 128)
    opt = parameters.build_parser().parse_args(['--embed_dim', str(embed_dim)])
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(112, embed_dim, generator=generator), dim=1).to(torch.bfloat16)
    labels = torch.randint(0, n_classes, (56,), generator=generator).repeat_interleave(2)
    checked, worst = [], 0.0
    for name in criteria.MODULES:
        criterion = criteria.select(name, opt, n_classes=n_classes)
        if not list(criterion.parameters()):
            continue
        reference = copy.deepcopy(criterion).double()
        criterion.to(device)
        # A miner's tuples from the CPU, for both: a CUDA generator draws other ones from the same seed
        tuples = reference.miner(embeddings.double(), labels) if reference.miner is not None else None
        tuples_there = None if tuples is None else [index.to(device) for index in tuples]
        leaf = embeddings.to(device).clone().requires_grad_()
        with runtime.deterministic_algorithms():
            loss = criterion(leaf, labels.to(device), indices_tuple=tuples_there)
            loss.backward()
        expected_leaf = embeddings.double().requires_grad_()
        expected = reference(expected_leaf, labels, indices_tuple=tuples)
        expected.backward()
        assert loss.dtype == torch.float32, f'{name}: a {loss.dtype} loss'
        for (key, parameter), (_, float64) in zip(criterion.named_parameters(), reference.named_parameters()):
            assert parameter.device == device and parameter.dtype == torch.float32, f'{name}.{key} on {parameter}'
            worst = max(worst, relative_error(parameter.grad, float64.grad))
        worst = max(worst, relative_error(loss, expected))
        rounding = relative_error(leaf.grad, expected_leaf.grad)  # a bfloat16 gradient: 8 bits of mantissa
        assert rounding < 1e-2, f'{name}: the embeddings\' gradient is off by {rounding:.1e} (relative)'
        start = [parameter.detach().clone() for parameter in criterion.parameters()]
        optimizer = build_optimizer(nn.Linear(1, 1).to(device), criterion, optim='adam', lr=1e-3, fc_lr=-1,
                                    decay=4e-4, fused=device.type == 'cuda')
        optimizer.step()
        for parameter, before in zip(criterion.parameters(), start):  # weights with a gradient move
            assert parameter.device == device and (parameter != before)[parameter.grad != 0].all(), name
        checked.append(name)
    assert worst < 1e-4, f'float32 on {device.type} vs float64 on the CPU: relative error {worst:.1e}'
    return (f'{", ".join(checked)}: float32 parameters on {device}; loss and their gradients within {worst:.1e} of '
            f'float64 on the CPU')


def relative_error(got, expected):
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    return ((got - expected).norm() / expected.norm().clamp(min=1e-12)).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cpu', action='store_true', help='Run on the CPU what can run there (a dry check).')
    parser.add_argument('--only', nargs='+', choices=sorted(CHECKS), help='Run only these checks.')
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device('cuda', torch.cuda.current_device()) if cuda else torch.device('cpu')
    failed = 0
    for name in args.only or CHECKS:
        try:
            print(f'PASS {name}: {CHECKS[name](device, quick=not cuda)}', flush=True)
        except Skip as reason:
            print(f'SKIP {name}: {reason}', flush=True)
        except Exception as error:  # every failure is reported, and the other checks still run
            failed += 1
            print(f'FAIL {name}: {type(error).__name__}: {" ".join(str(error).split())[:600]}', flush=True)
            traceback.print_exc(file=sys.stderr)
    print(f'cuda paths on {device}: {failed} failed', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
