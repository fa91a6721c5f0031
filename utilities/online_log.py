"""Optional Weights & Biases logging (--log_online); the key comes from WANDB_API_KEY or `wandb login`, never a flag."""
import logging
import netrc
import os

from utilities.errors import UserError

logger = logging.getLogger(__name__)


def has_wandb_key():
    if os.environ.get('WANDB_API_KEY'):
        return True
    try:
        return netrc.netrc().authenticators('api.wandb.ai') is not None
    except (OSError, netrc.NetrcParseError):
        return False


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

    def log(self, entry):
        if self.run is not None:
            self.run.log(entry, step=entry['epoch'])

    def finish(self):
        if self.run is not None:
            self.run.finish()
