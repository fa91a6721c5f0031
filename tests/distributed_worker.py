"""Run by tests/test_distributed.py, alone (`python`) or under `torchrun --nproc_per_node=2`:

    step SOURCE OUT CASE...  for each CASE, ARCH or ARCH:LOSS (default multisimilarity_obd_sd), one epoch of a
                       single training step at epoch 1 (the teacher term on); rank 0 saves the loss terms and the
                       weights and loss parameters before and after into OUT.<CASE>, every rank its loss and loss
                       parameters after into OUT.<CASE>.rank<r>
    evaluate SOURCE OUT LENGTH  main.evaluate of an untrained network on the In-Shop folder SOURCE (query and gallery
                       embedded in shards): rank 0 saves the metrics and the gathered embeddings into OUT (npz); then,
                       in the same process group, ShardSampler + gather_shards over a dataset of LENGTH items: rank 0
                       saves what it gathered into OUT.shards.npz
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import architectures  # noqa: E402
import criteria  # noqa: E402
import datasampler  # noqa: E402
import datasets  # noqa: E402
import main  # noqa: E402
import parameters  # noqa: E402
from engine.optimization import build_optimizer  # noqa: E402
from engine.teacher import make_teacher  # noqa: E402
from engine.training import EpochProgress, train_one_epoch, training_loader  # noqa: E402
from evaluation.evaluator import Evaluator  # noqa: E402
from plumbing import distributed  # noqa: E402
from plumbing.runtime import seed_everything  # noqa: E402
from plumbing.stop_signals import StopSignals  # noqa: E402
from runs import tiny_run_flags  # noqa: E402

# 8 images of 4 training classes: one batch of 4 classes x 2; frozen BatchNorm (a ViT has LayerNorm) makes each
# sample's embedding independent of the others in its slice; SGD (unlike Adam) shows any error in the gradient's scale.
STEP_FLAGS = {'--arch': 'resnet18_frozen_normalize', '--bs': 8, '--samples_per_class': 2, '--optim': 'sgd',
              '--lr': 0.05, '--dist_backend': 'gloo'}
EPOCH = 1


def perturb(teacher):
    """A teacher unlike the student (as after an epoch of training), the same in every process."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def step(source, out, cases):
    """The step of each case in turn (one process group for all: torchrun's start-up is the slow part)."""
    opt = parameters.parse_args(tiny_run_flags(source, os.path.dirname(out), **STEP_FLAGS))
    device = distributed.init(opt.dist_backend, opt.gpu, opt.bs, opt.samples_per_class, opt.dist_timeout)
    data = datasets.select(opt)
    default_loss = opt.loss
    for case in cases:
        opt.arch, _, loss = case.partition(':')
        opt.loss = loss or default_loss
        case_step(opt, data, device, f'{out}.{case}')
    distributed.teardown()


def case_step(opt, data, device, out):
    seed_everything(opt.seed)
    sampler = datasampler.select(opt, data['training'].labels)
    sampler.set_epoch(EPOCH)
    loader = training_loader(data['training'], sampler, 0, device)
    model = architectures.select(opt.arch, opt)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    network = distributed.wrap(model, device)
    teacher = make_teacher(model)
    perturb(teacher)
    criterion = criteria.select(opt.loss, opt, n_classes=data['training'].n_classes)
    criterion_before = learned(criterion)
    optimizer = build_optimizer(model, criterion, optim=opt.optim, lr=opt.lr, fc_lr=opt.fc_lr, decay=opt.decay)
    progress = train_one_epoch(network, teacher, criterion, optimizer, loader, device, EPOCH, EpochProgress(),
                               StopSignals(), skip_nonfinite=False)
    assert progress.trained_steps == 1
    losses = {'loss': progress.loss_sum, 'loss_rank': progress.loss_rank_sum, 'loss_kd': progress.loss_kd_sum}
    torch.save({**losses, 'criterion_after': learned(criterion)}, f'{out}.rank{distributed.rank()}')
    if distributed.is_main():
        torch.save({**losses, 'before': before, 'after': model.state_dict(), 'criterion_before': criterion_before,
                    'criterion_after': learned(criterion)}, out)


def learned(criterion):
    """A copy of the loss's tensors (its parameters and buffers; not its miners' generator states)."""
    return {name: value.clone() for name, value in criterion.state_dict().items() if torch.is_tensor(value)}


def shards(length, out):
    """In the process group that evaluate() joined."""
    sampler = distributed.ShardSampler(length, distributed.world_size(), distributed.rank())
    indices = np.array(list(sampler), dtype=np.int64)
    features = np.stack([indices * 10.0, indices * 10.0 + 1], axis=1).astype(np.float32)
    gathered = distributed.gather_shards(features, length), distributed.gather_shards(indices, length)
    if distributed.is_main():
        np.savez(out, features=gathered[0], indices=gathered[1])


def evaluate(source, out):
    """The evaluation; under torchrun the process group stays joined (for shards())."""
    flags = tiny_run_flags(source, os.path.dirname(out), **{'--dataset': 'inshop', '--dist_backend': 'gloo',
                                                            '--arch': 'resnet18_frozen_normalize'})
    opt = parameters.parse_args(flags)
    device = distributed.init(opt.dist_backend, opt.gpu, opt.bs, opt.samples_per_class, opt.dist_timeout)
    seed_everything(opt.seed)
    data = datasets.select(opt)
    model = architectures.select(opt.arch, opt)
    evaluators = {'': Evaluator(datasets.test_parts(data), batch_size=5, workers=0, device=device)}
    metrics, embedded = main.evaluate(model, evaluators, opt)
    if distributed.is_main():
        metrics.pop('eval_time_s')
        np.savez(out, metrics=json.dumps(metrics), **{f'{part}_{i}': array for part, arrays in embedded.items()
                                                      for i, array in enumerate(arrays)})


if __name__ == '__main__':
    command, argument, out, *rest = sys.argv[1:]
    if command == 'step':
        step(argument, out, rest)
    else:  # one torchrun for both checks of sharding: its start-up is the slow part
        evaluate(argument, out)
        shards(int(rest[0]), f'{out}.shards.npz')
        distributed.teardown()
