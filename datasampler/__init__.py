"""Datasampler registry: `select(opt, labels)` builds the class-balanced training batch sampler."""
from datasampler.class_balanced import DRAWS, ClassBalancedBatchSampler
from plumbing.lazy import lazy_module

distributed = lazy_module('plumbing.distributed')  # torch: when a sampler is built, not for parameters' DRAWS

__all__ = ['DRAWS', 'ClassBalancedBatchSampler', 'select']


def select(opt, labels):
    """The batch sampler over `labels` for --data_sampler, --bs, --samples_per_class and --seed; under torchrun
    it yields this process's slice of every global batch."""
    return ClassBalancedBatchSampler(labels, batch_size=opt.bs, samples_per_class=opt.samples_per_class,
                                     seed=opt.seed, num_replicas=distributed.world_size(), rank=distributed.rank(),
                                     draw=opt.data_sampler)
