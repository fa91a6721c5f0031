"""Optional Weights & Biases logging (--log_online); the key comes from WANDB_API_KEY or `wandb login`.

The old `--wandb_key KEY` flag still works: the key goes into this process's environment only, never into
the configuration, a file or the log.
"""
import logging
import netrc
import os
import sys

from utilities.errors import UserError
from utilities.run_record import HIDDEN

logger = logging.getLogger(__name__)


def has_wandb_key():
    if os.environ.get('WANDB_API_KEY'):
        return True
    try:
        return netrc.netrc().authenticators('api.wandb.ai') is not None
    except (OSError, netrc.NetrcParseError):
        return False


def take_wandb_key(opt):
    """Move --wandb_key out of `opt` into this process's WANDB_API_KEY, with a warning (never naming the key)."""
    key = vars(opt).pop('wandb_key', None)
    if key:
        os.environ['WANDB_API_KEY'] = key
        # W&B records sys.argv as the run's arguments (also in offline run files): it must not see the key there.
        sys.argv[:] = [argument.replace(key, HIDDEN) for argument in sys.argv]
        logger.warning('--wandb_key is kept for old scripts: the key is used by this process only and never stored; '
                       'prefer `wandb login` or WANDB_API_KEY, which keep it out of your shell history')


class OnlineLog:
    """Sends each epoch's entry to W&B when enabled (offline, to sync later, when no key is set up); else a no-op."""

    def __init__(self, enabled, project, group, name, config, folder, run_id=None):
        self.run = None
        if not enabled:
            return
        try:
            import wandb
        except ImportError:
            raise UserError('--log_online needs wandb: pip install wandb, or drop --log_online') from None
        mode = None
        if not os.environ.get('WANDB_MODE') and not has_wandb_key():
            mode = 'offline'
            logger.warning('W&B: no API key (set WANDB_API_KEY or run `wandb login`): logging offline into %s; '
                           '`wandb sync` uploads it later', os.path.join(folder, 'wandb'))
        self.run = wandb.init(project=project, group=group or None, name=name, config=config, dir=folder,
                              id=run_id, resume='allow', mode=mode)

    @property
    def run_id(self):
        return self.run.id if self.run is not None else None

    def log(self, entry, images=()):
        """Log an epoch's entry and the PNG files `images` (e.g. curves.png, retrieval.png) as W&B images."""
        if self.run is not None:
            import wandb

            pictures = {os.path.splitext(os.path.basename(path))[0]: wandb.Image(path) for path in images}
            self.run.log({**entry, **pictures}, step=entry['epoch'])

    def finish(self):
        if self.run is not None:
            self.run.finish()
