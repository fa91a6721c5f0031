"""Optional Weights & Biases logging (--log_online); the key comes from WANDB_API_KEY or `wandb login`.

W&B never ends or stalls a run. When wandb.init cannot reach W&B (no route, DNS, a timeout, a rejected key, a service
error), the run logs offline into its folder, to upload later with `wandb sync`; a `log` or `finish` that fails
later costs the W&B record only, never the run folder's.

The old `--wandb_key KEY` flag still works: the key goes into this process's environment only, never into
the configuration, a file or the log.
"""
import logging
import math
import netrc
import os
import secrets
import sys

from plumbing.errors import UserError, one_line
from run_folder.record import HIDDEN

logger = logging.getLogger(__name__)

INIT_WAIT_S = 20
"""How long wandb.init may try to reach W&B (its init_timeout; W&B adds a few seconds, and where W&B's server hangs
rather than refuses, its own usage analytics wait up to 10-20 s more at exit). A WANDB_INIT_TIMEOUT the user set
decides instead."""
FINISH_WAIT_S = 60
"""How long the end of a run may wait for W&B to upload what is left."""


def has_wandb_key():
    if os.environ.get('WANDB_API_KEY'):
        return True
    try:
        return netrc.netrc().authenticators('api.wandb.ai') is not None
    except (OSError, netrc.NetrcParseError):
        return False


def use_wandb_key(key):
    """Put --wandb_key's `key` into this process's WANDB_API_KEY, with a warning (never naming the key); nothing
    without a key."""
    if key:
        os.environ['WANDB_API_KEY'] = key
        # W&B records sys.argv as the run's arguments (also in offline run files): it must not see the key there.
        sys.argv[:] = [argument.replace(key, HIDDEN) for argument in sys.argv]
        logger.warning('--wandb_key is kept for old scripts: the key is used by this process only and never stored; '
                       'prefer `wandb login` or WANDB_API_KEY, which keep it out of your shell history')


def online_settings(collective_timeout_s=None):
    """wandb.Settings arguments of a run that may reach W&B: bounded waits at start and end, W&B's output short.

    Under torchrun the other processes wait for this one in their first collective, which gives up after
    `collective_timeout_s` (--dist_timeout): the wait for W&B stays within half of it.
    """
    settings = {'quiet': True, 'finish_timeout': FINISH_WAIT_S, 'finish_timeout_raises': True}
    if not os.environ.get('WANDB_INIT_TIMEOUT'):
        settings['init_timeout'] = min(INIT_WAIT_S, (collective_timeout_s or math.inf) / 2)
    return settings


def loggable(wandb, value):
    """`value` as W&B takes it: a list (the spectrum of rho_spectrum@0) as a histogram of its values over their
    indices (bin i from i to i + 1), as the authors logged it."""
    if isinstance(value, list):
        return wandb.Histogram(np_histogram=(value, list(range(len(value) + 1))))
    return value


class OnlineLog:
    """Sends each epoch's entry to W&B when enabled (offline, to sync later, without a key or a reachable W&B);
    else a no-op. A resumed run passes the W&B run id it had, online or offline, as `run_id`."""

    def __init__(self, enabled, project, group, name, config, folder, run_id=None, collective_timeout_s=None):
        self.run = self.run_id = None
        self.failed = False
        if not enabled:
            return
        try:
            import wandb
        except ImportError:
            raise UserError('--log_online needs wandb: pip install wandb, or drop --log_online') from None
        self.sync_folder = os.path.join(folder, 'wandb')
        self.run_id = run_id or secrets.token_hex(4)  # the online attempt's and the offline run's, as W&B's ids
        arguments = {'project': project, 'group': group or None, 'name': name, 'config': config, 'dir': folder,
                     'id': self.run_id, 'resume': 'allow'}
        if not os.environ.get('WANDB_MODE') and not has_wandb_key():
            logger.warning('W&B: no API key (set WANDB_API_KEY or run `wandb login`): logging offline into %s; '
                           '`wandb sync %s` uploads it later', self.sync_folder, self.sync_folder)
            self.run = self.start_offline(wandb, arguments)
            return
        try:
            self.run = wandb.init(**arguments, settings=wandb.Settings(**online_settings(collective_timeout_s)))
        except Exception as error:  # whatever W&B raises (CommError, AuthenticationError, UsageError, timeouts)
            self.run = self.start_offline(wandb, arguments, after=error)
            if self.run is not None:
                logger.warning('W&B could not start online (%s: %s): logging offline into %s; `wandb sync %s` uploads '
                               'it later', type(error).__name__, one_line(error), self.sync_folder, self.sync_folder)

    def start_offline(self, wandb, arguments, after=None):
        """An offline W&B run with the same id (None, with a warning, where W&B cannot even write locally)."""
        try:
            if after is not None:
                wandb.teardown()  # the failed attempt holds the run id in W&B's service process until it stops
            return wandb.init(**arguments, mode='offline')
        except Exception as error:
            self.give_up('to start even offline' if after is not None else 'to start', error, 'nothing goes to W&B')
            return None

    def log(self, entry, images=()):
        """Log an epoch's entry and the PNG files `images` (e.g. curves.png, retrieval.png) as W&B images."""
        if self.run is None or self.failed:
            return
        try:
            import wandb

            pictures = {os.path.splitext(os.path.basename(path))[0]: wandb.Image(path) for path in images}
            self.run.log({**{key: loggable(wandb, value) for key, value in entry.items()}, **pictures},
                         step=entry['epoch'])
        except Exception as error:
            self.give_up(f'to log epoch {entry["epoch"]}', error, 'W&B gets no more entries of this run')

    def finish(self):
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as error:
            self.give_up('to finish', error, 'W&B\'s record of this run may lack its end')
        self.run = None

    def give_up(self, action, error, consequence):
        """One warning, for the first W&B failure: the run goes on, later entries are not sent."""
        if not self.failed:
            logger.warning('W&B failed %s (%s: %s): %s; the run folder keeps every record', action,
                           type(error).__name__, one_line(error), consequence)
        self.failed = True
