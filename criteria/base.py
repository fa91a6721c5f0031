"""What every criterion shares: the call signature, teacher use, logged terms, parameter groups, precision."""
import torch
from torch import nn


def loss_dtype(*tensors):
    """The dtype loss arithmetic runs in: float32, or wider when an input is wider (e.g. float64)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def seeded_generator(seed):
    """The generator a loss draws its parameters' start from: seeded with the run's --seed and apart from the global
    one, so a run's proxies start the same every time, on every process, whatever was drawn before."""
    return torch.Generator().manual_seed(seed)


def seeded_uniform(shape, bound, seed):
    """U(−bound, bound) draws of `shape` from seeded_generator(seed)."""
    return torch.empty(shape).uniform_(-bound, bound, generator=seeded_generator(seed))


class Criterion(nn.Module):
    """A loss called as `criterion(batch, labels, teacher_batch=None, epoch=0, indices_tuple=None)` -> scalar tensor.

    Ranking losses ignore `teacher_batch` and `epoch`; they are part of the signature so the
    training loop calls every criterion the same way. A loss with a batch miner (`miner`) uses the tuples of
    `indices_tuple` (index tensors into the batch, as the miner returns them) where given, and mines its own
    otherwise, as pytorch-metric-learning's losses do. `terms` holds the named parts of the last loss for
    logging (empty for a loss that has a single part).
    """

    def __init__(self, miner=None):
        super().__init__()
        self.terms = {}
        self.miner = miner

    def tuples(self, batch, labels, indices_tuple=None):
        """`indices_tuple` where given, else what the miner mines from the batch."""
        if indices_tuple is not None:
            return indices_tuple
        with torch.no_grad():
            return self.miner(batch.detach(), labels)

    def needs_teacher(self, epoch):
        """Whether forward at `epoch` uses teacher embeddings."""
        return False

    def kd_weight(self, epoch):
        """The weight of a distillation term at `epoch` (0: a ranking loss has none)."""
        return 0.0

    def param_groups(self, lr=None):
        """Optimiser parameter groups (dicts with 'params' and 'lr') for the loss's own parameters.

        `lr` is the network's learning rate, for parameters without a rate of their own.
        """
        return []
