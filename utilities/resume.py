"""What a resumable checkpoint holds beyond the weights, and how a run continues from it."""
import argparse
import logging

from utilities.errors import UserError
from utilities.runtime import rng_states, set_rng_states
from utilities.summary import RunSummary
from utilities.training import EpochProgress

logger = logging.getLogger(__name__)

# Flags that may differ from the resumed run's: where data and hardware are, and how long to go on.
OVERRIDABLE = {'resume', 'dry_run', 'source_path', 'kernels', 'gpu', 'evaluate_on_gpu', 'log_online',
               'skip_nonfinite', 'n_epochs', 'save_path', 'amp', 'dist_backend', 'dist_timeout', 'compile',
               'evaluate_every'}

# What runs saved before a flag existed did; a flag missing here takes today's default.
BEFORE_FLAG_EXISTED = {'data_sampler': 'class_distinct', 'full_decode': True, 'pil_resampling': True}


def with_missing_flags(config, defaults):
    """A run's flags (`config`) completed with the flags it predates: what runs did before the flag existed, else
    the flag's value in `defaults`."""
    return {**{name: BEFORE_FLAG_EXISTED.get(name, value) for name, value in defaults.items()}, **config}


def training_state(epoch, progress, teacher, criterion, optimizer, scheduler, summary, online_id):
    """Everything beyond the student's weights that continuing at (epoch, progress.step) needs."""
    state = {'epoch': epoch, 'progress': progress.state_dict(), 'criterion': criterion.state_dict(),
             'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(), 'rng': rng_states(),
             'summary': summary.to_dict(), 'online_run_id': online_id}
    if progress.step:  # mid-epoch the teacher differs from the student (at an epoch's end it equals it)
        state['teacher'] = teacher.state_dict()
    return state


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
    config.update(resume=opt.resume, dry_run=opt.dry_run)
    done = checkpoint['training_state']['epoch']
    if config['n_epochs'] <= done and not checkpoint['training_state']['progress']['step']:
        raise UserError(f'{path}: the run already finished its {config["n_epochs"]} epochs; pass a larger --n_epochs '
                        f'to train on')
    return argparse.Namespace(**config)


def restore_training_state(checkpoint, model, teacher, criterion, optimizer, scheduler, metric_names):
    """Load weights and training state; returns (epoch, progress, summary, online run id)."""
    state = checkpoint['training_state']
    model.load_state_dict(checkpoint['state_dict'])
    teacher.load_state_dict(state.get('teacher', checkpoint['state_dict']))
    criterion.load_state_dict(state['criterion'])
    optimizer.load_state_dict(state['optimizer'])
    scheduler.load_state_dict(state['scheduler'])
    set_rng_states(state['rng'])
    summary = RunSummary.from_dict(state['summary'], metric_names)
    return state['epoch'], EpochProgress(**state['progress']), summary, state['online_run_id']
