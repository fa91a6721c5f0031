"""What a run records about itself: command line, configuration, data, library versions, git commit, times."""
import datetime
import json
import logging
import os
import shlex
import subprocess

import numpy as np

from plumbing.files import atomic_write_json
from plumbing.lazy import lazy_module
from run_folder.folder import CONFIG_FILE

# Only their versions are read here, when a run starts: `--help` and the run summaries need none of them.
faiss = lazy_module('faiss')
torch = lazy_module('torch')
torchvision = lazy_module('torchvision')

logger = logging.getLogger(__name__)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET_FLAG = '--wandb_key'
HIDDEN = 'HIDDEN'
SPLITS = ('training', 'testing', 'query', 'gallery', 'validation')


def now():
    """The current UTC time as an ISO-8601 string (seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def command_line(script, argv):
    """The command as typed, with the value of --wandb_key (also abbreviated or as --flag=value) hidden."""
    shown, hide_next = [], False
    for token in argv:
        flag = token.split('=', 1)[0]
        is_secret_flag = len(flag) > 2 and SECRET_FLAG.startswith(flag) and flag.startswith('--')
        if hide_next:
            shown.append(HIDDEN)
        elif is_secret_flag and '=' in token:
            shown.append(f'{flag}={HIDDEN}')
        else:
            shown.append(token)
        hide_next = is_secret_flag and '=' not in token
    return shlex.join(['python', script, *shown])


def library_versions():
    """Versions of the libraries that decide the numbers of a run."""
    try:
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    versions = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'faiss': faiss_version,
                'numpy': np.__version__, 'cuda': torch.version.cuda}
    # torch.__version__ is a str subclass, which torch.load(weights_only=True) refuses inside a checkpoint.
    return {name: str(version) if version is not None else None for name, version in versions.items()}


def git_commit(folder=REPOSITORY):
    """The commit checked out in `folder` (+ '-dirty' with uncommitted changes), or None outside a git checkout."""
    def git(*args):
        return subprocess.run(['git', '-C', folder, *args], capture_output=True, text=True, timeout=10)
    try:
        head = git('rev-parse', 'HEAD')
        if head.returncode != 0:
            return None
        dirty = git('status', '--porcelain', '--untracked-files=no').stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ('-dirty' if dirty else '')


def applied_defaults_line(dataset, applied):
    """'digits defaults applied where you set nothing: --arch resnet18_normalize --not_pretrained ...'."""
    flags = ' '.join(f'--{k} {v}' if v is not True else f'--{k}' for k, v in applied.items())
    return f'{dataset} defaults applied where you set nothing: {flags}'


def describe_run(script, argv, applied_defaults, data_folder, data):
    """The record of one process working on a run (its start; a resume adds another)."""
    return {'command': command_line(script, argv), 'started': now(), 'ended': None,
            'applied_defaults': applied_defaults, 'dataset_folder': data_folder,
            'split_sizes': {split: len(data[split]) for split in SPLITS if data.get(split) is not None},
            'split_classes': {split: int(len(np.unique(data[split].labels))) for split in SPLITS
                              if data.get(split) is not None},
            'versions': library_versions(), 'git_commit': git_commit()}


def record_start(folder, config, record):
    """Write <folder>/config.json and begin the log with who/what/where of the run."""
    atomic_write_json(os.path.join(folder, CONFIG_FILE), config)
    logger.info('command: %s', record['command'])
    logger.info('configuration: %s', json.dumps(config, sort_keys=True))
    if record['applied_defaults']:
        logger.info(applied_defaults_line(config.get('dataset'), record['applied_defaults']))
    logger.info('dataset folder: %s | split sizes: %s', record['dataset_folder'],
                ', '.join(f'{split} {size}' + (f' ({record["split_classes"][split]} classes)'
                                               if split in record.get('split_classes', {}) else '')
                          for split, size in record['split_sizes'].items()))
    logger.info('versions: %s | git commit: %s', ', '.join(f'{k} {v}' for k, v in record['versions'].items()),
                record['git_commit'])
