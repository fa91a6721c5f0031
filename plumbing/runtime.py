"""Devices, seeding, and the random-number-generator states that a resumed run must get back."""
import contextlib
import logging
import os
import random

import numpy as np
import torch

from plumbing.errors import UserError

logger = logging.getLogger(__name__)


def select_device(gpu_ids):
    """cuda:<first --gpu> when CUDA is available, else the CPU (with a warning when a GPU other than the
    default 0 was asked for)."""
    if not torch.cuda.is_available():
        if list(gpu_ids) != [0]:
            logger.warning('--gpu %s was asked for, but torch sees no CUDA device: running on the CPU',
                           ' '.join(map(str, gpu_ids)))
        return torch.device('cpu')
    index = gpu_ids[0]
    if not 0 <= index < torch.cuda.device_count():
        raise UserError(f'--gpu {index} does not exist: this machine has {torch.cuda.device_count()} GPU(s), '
                        f'numbered from 0')
    torch.cuda.set_device(index)
    return torch.device('cuda', index)


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) inside the block, as --deterministic sets it; as it was after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def rng_states():
    """Python, numpy and torch generator states, as tensors and plain values: the CPU's, and on CUDA this process's
    own device's (`cuda`; all processes of a torchrun run draw alike there, and reading every GPU's state would make
    this process create a context on each GPU of the node)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        'python': random.getstate(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'position': int(position),
                  'has_gauss': int(has_gauss), 'cached': float(cached)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return states


def set_rng_states(states):
    random.setstate(to_tuples(states['python']))
    numpy_state = states['numpy']
    np.random.set_state((numpy_state['kind'], numpy_state['keys'].numpy().astype(np.uint32),
                         numpy_state['position'], numpy_state['has_gauss'], numpy_state['cached']))
    torch.set_rng_state(states['torch'])
    if states.get('cuda') is not None and torch.cuda.is_available():
        set_cuda_rng_state(states['cuda'])


def set_cuda_rng_state(state):
    """Restore this process's CUDA device's generator from `state`: one device's state, or the list of every
    visible device's that checkpoints of older versions hold (its entry for this device, where it has one: a
    checkpoint from a machine with more GPUs resumes on one with fewer)."""
    device = torch.cuda.current_device()
    if isinstance(state, (list, tuple)):
        if device >= len(state):
            logger.warning('the checkpoint holds the CUDA random states of %d device(s), none for cuda:%d: its '
                           'generator starts from the seed', len(state), device)
            return
        state = state[device]
    torch.cuda.set_rng_state(state, device)


def to_tuples(value):
    """random.setstate needs tuples where a round trip through a checkpoint may give lists."""
    return tuple(to_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
