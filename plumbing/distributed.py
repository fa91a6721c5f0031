"""Several processes (torchrun, one per GPU or CPU slot) training as one: set-up, collectives, sharded evaluation.

Without torchrun every helper is a no-op, so a plain `python main.py` stays a single process.
Under torchrun the student's embeddings of every rank are gathered (with the gradient flowing back), so the
loss sees the whole global batch. The gather's backward sums the gradient that each rank's copy of the loss sends
to a rank's slice, N times the single-process gradient; DDP's average over the N ranks brings it back to it: the
N-process update equals the one-process update on the same global batch, with no loss scaling.
"""
import datetime
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
# The differentiable all-gather that torch.distributed.nn.functional.all_gather's deprecation points to.
from torch.distributed._functional_collectives import all_gather_single

from plumbing.errors import UserError
from plumbing.runtime import select_device

logger = logging.getLogger(__name__)

BACKENDS = ('auto', 'nccl', 'gloo')


def launched_ranks():
    """WORLD_SIZE that torchrun set (1 without torchrun)."""
    try:
        return int(os.environ.get('WORLD_SIZE', '1'))
    except ValueError:
        raise UserError(f'WORLD_SIZE={os.environ["WORLD_SIZE"]!r} is not a number; start with torchrun') from None


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main():
    """Whether this process writes the run folder, logs, checkpoints and W&B (rank 0, or the only process)."""
    return rank() == 0


def check_setup(backend, bs, samples_per_class, world, cuda_devices):
    """UserError, before any process waits for another, for a set-up that cannot work on every rank alike."""
    if backend == 'nccl' and not cuda_devices:
        raise UserError('--dist_backend nccl needs GPUs, and torch sees none here; use --dist_backend gloo (or auto) '
                        'to train on CPUs')
    if bs % (world * samples_per_class):
        raise UserError(f'--bs {bs} is the global batch: split over {world} processes it must be a multiple of '
                        f'{world} x --samples_per_class {samples_per_class} = {world * samples_per_class}')


def init(backend, gpu_ids, bs, samples_per_class, timeout_minutes):
    """The device of this process; under torchrun (WORLD_SIZE > 1) also joins the process group.

    backend 'auto' is NCCL where CUDA is available, else gloo. Each rank takes GPU LOCAL_RANK of its node
    (--gpu is for single-process runs). Collectives give up after `timeout_minutes` instead of waiting forever.
    """
    world = launched_ranks()
    if world == 1:
        return select_device(gpu_ids)
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_setup(backend, bs, samples_per_class, world, cuda_devices)
    if backend == 'auto':
        backend = 'nccl' if cuda_devices else 'gloo'
    device = torch.device('cpu')
    if cuda_devices:
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if local_rank >= cuda_devices:
            raise UserError(f'torchrun started more processes on this node than it has GPUs ({cuda_devices}); '
                            f'pass --nproc_per_node {cuda_devices} or fewer')
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                            device_id=device if device.type == 'cuda' else None)
    return device


def teardown(finished=True):
    """Leave the process group. After a `finished` run every rank first waits for the others, so that no rank
    (rank 0 holds the rendezvous store) is gone while another still ends its last collective: under load gloo then
    aborted a rank at exit. A rank that stops on an error does not wait: the others may never come."""
    if not is_distributed():
        return
    if finished:
        try:
            dist.barrier()
        except RuntimeError:  # a rank already gone (DistBackendError): leave all the same
            pass
    dist.destroy_process_group()


def wrap(model, device):
    """DistributedDataParallel around `model` (the model itself in a single process).

    BatchNorm that trains (an arch without _frozen) becomes SyncBatchNorm on GPUs, so its batch statistics are
    those of the global batch, as in one process; on CPUs (gloo) SyncBatchNorm is unavailable and each rank
    normalises with its own slice's statistics.
    """
    if not is_distributed():
        return model
    trains_batchnorm = not getattr(model, 'frozen_bn', True) and any(
        isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in model.modules())
    if trains_batchnorm:
        if device.type == 'cuda':
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif is_main():
            logger.warning('BatchNorm trains here (no _frozen in --arch) and SyncBatchNorm needs GPUs: each of the '
                           '%d processes normalises with the statistics of its own slice of the batch', world_size())
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None)


def collective_device():
    """Where tensors of collectives live: the GPU with NCCL, the CPU with gloo."""
    return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def gather_batch(embeddings, labels, teacher_embeddings=None):
    """Every rank's slice concatenated in rank order: the global batch, as one process would see it.

    The student's embeddings keep their gradient; labels and the teacher's embeddings need none.
    """
    if not is_distributed():
        return embeddings, labels, teacher_embeddings
    embeddings = all_gather_single(embeddings.contiguous(), 0, dist.group.WORLD)
    labels = gather_tensor(labels)
    if teacher_embeddings is not None:
        teacher_embeddings = gather_tensor(teacher_embeddings)
    return embeddings, labels, teacher_embeddings


def gather_tensor(tensor):
    """All ranks' equally shaped tensors concatenated in rank order, without gradient."""
    return all_gather_single(tensor.detach().contiguous(), 0, dist.group.WORLD)


def all_ranks(flag):
    """Whether `flag` holds on every rank (every rank gets the same answer)."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([0 if flag else 1], device=collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return not value.item()


def largest_over_ranks(number):
    """The largest of the ranks' integers."""
    if not is_distributed():
        return number
    value = torch.tensor([number], dtype=torch.int64, device=collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def average_gradients(module):
    """Average the gradients of `module`'s parameters over ranks (for the loss's own parameters, outside DDP)."""
    if not is_distributed():
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)  # a sum: gloo has no average
            parameter.grad /= world_size()


def broadcast_buffers(model):
    """Give every rank rank 0's buffers (BatchNorm running statistics), so teachers and evaluation agree."""
    if not is_distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def broadcast_object(value):
    """Rank 0's `value` on every rank (a picklable object)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def on_main(function, *args, **kwargs):
    """function(*args, **kwargs) run by rank 0 alone, its result given to every rank.

    When it raises, rank 0 raises the error and every other rank a UserError (or RuntimeError) that says so,
    instead of waiting for a result that never comes.
    """
    outcome = None
    if is_main():
        try:
            outcome = ('ok', function(*args, **kwargs))
        except Exception as error:
            broadcast_object(('error', isinstance(error, UserError), str(error)))
            raise
    outcome = broadcast_object(outcome)
    if outcome[0] == 'error':
        _, user_error, message = outcome
        raise (UserError(message) if user_error else RuntimeError(f'rank 0 failed: {message}'))
    return outcome[1]


class ShardSampler(torch.utils.data.Sampler):
    """Indices rank, rank + N, rank + 2N, ... of a dataset of `length` items: each item on exactly one rank."""

    def __init__(self, length, num_replicas, rank):
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self):
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self):
        return len(range(self.rank, self.length, self.num_replicas))


def gather_shards(array, length):
    """The rows of every rank's ShardSampler shard of `array` (numpy), put back in dataset order (`length` rows)."""
    if not is_distributed():
        return array
    world = world_size()
    rows = -(-length // world)
    padded = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    padded[:len(array)] = array
    parts = gather_tensor(torch.from_numpy(padded).to(collective_device())).cpu()
    # parts holds rank 0's rows, then rank 1's, ...; row k of rank r is item r + k * world.
    interleaved = parts.reshape(world, rows, *array.shape[1:]).transpose(0, 1).reshape(world * rows, *array.shape[1:])
    return interleaved[:length].numpy()
