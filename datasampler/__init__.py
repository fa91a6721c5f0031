"""Datasampler registry: `select(opt, labels)` builds the class-balanced training batch sampler."""
import torch.distributed

from datasampler.class_balanced import DRAWS, ClassBalancedBatchSampler

__all__ = ['DRAWS', 'ClassBalancedBatchSampler', 'select']


def replicas_and_rank():
    """(world size, rank) of the initialised torch.distributed group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def select(opt, labels):
    """The batch sampler over `labels` for --data_sampler, --bs, --samples_per_class and --seed."""
    num_replicas, rank = replicas_and_rank()
    return ClassBalancedBatchSampler(labels, batch_size=opt.bs, samples_per_class=opt.samples_per_class,
                                     seed=opt.seed, num_replicas=num_replicas, rank=rank, draw=opt.data_sampler)
