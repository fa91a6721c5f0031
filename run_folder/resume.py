"""What a resumable checkpoint holds beyond the weights, and how a run continues from it."""
import argparse
import logging
from dataclasses import dataclass

import torch

from criteria.obd_sd import distillation_weight
from run_folder.checkpoint import save_checkpoint
from run_folder.saved_flags import with_missing_flags
from plumbing.errors import UserError
from plumbing.runtime import rng_states, set_rng_states
from run_folder.summary import RunSummary
from engine.training import EpochProgress

logger = logging.getLogger(__name__)

SESSION_FLAGS = {'resume', 'dry_run', 'wandb_key'}
"""Flags of one session (one process), not of a run's configuration: a resume takes them as typed now and never
compares them with the run's (--wandb_key is in no run's files at all: plain_config leaves it out). A SLURM requeue
script passes the same command line again, --wandb_key included."""
OVERRIDABLE = SESSION_FLAGS | {'source_path', 'kernels', 'gpu', 'evaluate_on_gpu', 'log_online', 'skip_nonfinite',
                               'n_epochs', 'save_path', 'amp', 'dist_backend', 'dist_timeout', 'compile',
                               'evaluate_every', 'save_embeddings'}
"""Flags that may differ from the resumed run's: the session's own, where data and hardware are, how long to go
on."""


@dataclass
class TrainingState:
    """What a run trains and keeps, saved and restored together: the student, its teacher, the loss (with its
    parameters), optimizer, scheduler and the run's summary."""
    model: torch.nn.Module
    teacher: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    summary: RunSummary

    def save(self, path, epoch, progress, online_id):
        """A resumable checkpoint: the weights, and all that continuing at (epoch, progress.step) needs."""
        state = {'epoch': epoch, 'progress': progress.state_dict(), 'criterion': self.criterion.state_dict(),
                 'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                 'rng': rng_states(), 'summary': self.summary.to_dict(), 'online_run_id': online_id}
        if progress.step:  # mid-epoch the teacher differs from the student (at an epoch's end it equals it)
            state['teacher'] = self.teacher.state_dict()
        metrics = self.summary.history[-1] if self.summary.history else {}
        save_checkpoint(path, self.model, self.summary.config, epoch, metrics, state)

    def restore(self, checkpoint):
        """Load a resumable checkpoint into everything (and the RNGs); returns (epoch, progress, online run id)."""
        state = checkpoint['training_state']
        self.model.load_state_dict(checkpoint['state_dict'])
        self.teacher.load_state_dict(state.get('teacher', checkpoint['state_dict']))
        load_criterion_state(self.criterion, state['criterion'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        set_rng_states(state['rng'])
        self.summary = RunSummary.from_dict(state['summary'], self.summary.metric_names)
        return state['epoch'], EpochProgress(**state['progress']), state['online_run_id']


def load_criterion_state(criterion, state):
    """Load the loss's saved state; a checkpoint saved before its miner kept a generator of its own leaves that
    miner's generator freshly seeded (a warning says so), anything else missing or unexpected is an error."""
    result = criterion.load_state_dict(state, strict=False)
    without_generator = [key for key in result.missing_keys if key.endswith('_extra_state')]
    if result.unexpected_keys or len(without_generator) != len(result.missing_keys):
        raise UserError(f'the checkpoint\'s loss state does not fit --loss (missing {result.missing_keys}, '
                        f'unexpected {result.unexpected_keys}); resume with the run\'s own flags')
    if without_generator:
        logger.warning('the checkpoint predates the batch miner\'s own generator: mining goes on from a fresh one')


def options_for_resume(checkpoint, opt, explicit, path):
    """The resumed run's flags; flags typed now may only change where data/hardware are and n_epochs."""
    if 'training_state' not in checkpoint or 'config' not in checkpoint:
        raise UserError(f'{path} is not a resumable checkpoint (it has no training state); resume from a run '
                        f'folder or its last.pth')
    config = with_missing_flags(checkpoint['config'], vars(opt))
    for name in sorted(explicit - OVERRIDABLE):
        if config[name] != getattr(opt, name):
            raise UserError(f'--{name} {getattr(opt, name)} differs from the resumed run ({config[name]}); resume '
                            f'without it, or start a new run')
    config.update({name: getattr(opt, name) for name in explicit & OVERRIDABLE})
    config.update({name: getattr(opt, name) for name in SESSION_FLAGS})
    done = checkpoint['training_state']['epoch']
    if config['n_epochs'] <= done and not checkpoint['training_state']['progress']['step']:
        raise UserError(f'{path}: the run already finished its {config["n_epochs"]} epochs; pass a larger --n_epochs '
                        f'to train on')
    return argparse.Namespace(**config)


LOSSES_BEFORE_THE_AUTHORS_MATH = ('margin', 'triplet', 'contrastive')
"""Losses whose math changed when the authors' batch miners came (runs saved before --batch_mining existed)."""


def loss_math_change(checkpoint, opt):
    """The warning for a resumed margin, triplet or contrastive run saved before --batch_mining existed, else None:
    such a run trained with this repository's earlier math (its own miners and divisors) and goes on with the
    authors'."""
    loss = opt.loss.removesuffix('_obd_sd')
    if 'batch_mining' in checkpoint['config'] or loss not in LOSSES_BEFORE_THE_AUTHORS_MATH:
        return None
    return (f'this {loss} run was saved before the authors\' batch miners came: it trained with this repository\'s '
            f'earlier {loss} loss, and goes on with the authors\' (docs/losses.md); start a new run to compare with '
            f'theirs')


def distillation_weight_change(checkpoint, opt):
    """The warning for a resume whose --n_epochs differs from the run's with PSD on, else None: the distillation
    weight (e/E)·λ·τ² grows with e/E, so another E changes it from the resume epoch on."""
    before = checkpoint['config']['n_epochs']
    if not opt.PSD or not opt.kd_lambda or opt.n_epochs == before:
        return None
    epoch = max(checkpoint['training_state']['epoch'], 1)  # epoch 0 has weight 0 either way
    old, new = (distillation_weight(epoch, n_epochs, opt.kd_lambda, opt.kd_tau) for n_epochs in (before, opt.n_epochs))
    return (f'--n_epochs {opt.n_epochs} instead of the run\'s {before} changes the distillation weight '
            f'(e/E)·λ·τ² from here on: {new:g} instead of {old:g} at epoch {epoch}, growing by {new / epoch:g} '
            f'instead of {old / epoch:g} an epoch')
