"""The Optuna study of a search: its storage (a journal file in the study folder by default, any Optuna storage URL
otherwise), the setting it was started with, and the trials of workers that stopped without a word."""
import os
import socket
import time

from plumbing.errors import UserError
from plumbing.lazy import lazy_module

optuna = lazy_module('optuna')

JOURNAL_FILE = 'optuna_journal.log'
STUDIES = 'hyperparameter_search'
"""The folder under --save_path that holds the study folders (not `search`, the name of the catalogue-search
package, where a search with --save_path . would put its study)."""
FORMER_STUDIES = 'search'
HEARTBEAT_S = 30
"""How often a worker stamps its running trial."""


def study_folder(save_path, name):
    """The absolute study folder of study `name`: <save_path>/hyperparameter_search/<name>. A UserError where only the
    folder of an earlier version, <save_path>/search/<name>, exists: moving it continues the study."""
    folder = os.path.abspath(os.path.join(save_path, STUDIES, name))
    former = os.path.abspath(os.path.join(save_path, FORMER_STUDIES, name))
    if not os.path.exists(folder) and os.path.isdir(former):
        raise UserError(f'the study {name} is in {former}, where earlier versions kept studies; move it to continue '
                        f'it: mkdir -p {os.path.dirname(folder)} && mv {former} {folder}')
    return folder


def storage_of(url, folder):
    """The Optuna storage: `url` as Optuna takes it (sqlite:///..., postgresql://... through psycopg), or, without
    one, a journal file in `folder` that the workers of one file system share (file locks, no server)."""
    if not url:
        journal = optuna.storages.journal.JournalFileBackend(os.path.join(folder, JOURNAL_FILE))
        return optuna.storages.JournalStorage(journal)
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            return optuna.storages.get_storage(with_driver(url))
        except ImportError as error:
            raise UserError(f'--storage {url}: the database driver is not installed ({error.__cause__ or error}); '
                            f'pip install -r requirements.txt (psycopg for PostgreSQL)') from None
        except Exception as error:  # a URL Optuna cannot open: a server out of reach, a database that does not exist
            if attempt < SCHEMA_ATTEMPTS and creating_tables_at_once(error):
                time.sleep(attempt)
                continue
            raise UserError(f'--storage {url}: Optuna cannot open it ({type(error).__name__}: '
                            f'{str(error).strip().splitlines()[0][:200]})') from None


SCHEMA_ATTEMPTS = 5
"""Workers started at once on an empty database (a SLURM array) all create Optuna's tables; all but one fail, and
open the storage again once the tables are there."""


def creating_tables_at_once(error):
    """Whether `error` is another worker creating Optuna's tables in the same database at the same time."""
    text = str(error)
    return type(error).__name__ in ('IntegrityError', 'ProgrammingError') and (
        'duplicate key' in text or 'already exists' in text)


def with_driver(url):
    """`url` with PostgreSQL's driver named: postgresql:// and postgres:// go through psycopg (version 3, in
    requirements.txt), whichever driver SQLAlchemy would take by default (psycopg2 before SQLAlchemy 2.1)."""
    scheme, separator, rest = url.partition('://')
    return f'{POSTGRESQL_DRIVER}://{rest}' if separator and scheme in ('postgresql', 'postgres') else url


POSTGRESQL_DRIVER = 'postgresql+psycopg'


def open_study(name, storage, setting, pruner):
    """The study `name` (created, or continued where it exists) maximising the objective; a UserError where an
    existing study was started with another `setting` (the base run, the space, the objective), whose trials
    would not be comparable."""
    study = optuna.create_study(study_name=name, storage=storage, direction='maximize', pruner=pruner,
                                load_if_exists=True)
    started_with = study.user_attrs.get('setting')
    if started_with is None:
        study.set_user_attr('setting', setting)
    elif started_with != setting:
        differing = sorted(key for key in set(setting) | set(started_with)
                           if setting.get(key) != started_with.get(key))
        raise UserError(f'study {name} was started with another {", ".join(differing)} ({started_with}); continue '
                        f'it with the same command, or start a new one with another --study')
    return study


def worker_name():
    """'host:pid' of this process, as its running trials record it."""
    return f'{socket.gethostname()}:{os.getpid()}'


def stamp(trial):
    """Record that this worker runs `trial`, now (a running trial without fresh stamps is a stopped worker's)."""
    trial.set_user_attr('worker', worker_name())
    trial.set_user_attr('heartbeat', time.time())


def is_stale(trial, stale_after_s, now=None):
    """Whether a running trial's worker has stopped: a process of this host that no longer exists, or no stamp for
    `stale_after_s` seconds (any host)."""
    now = time.time() if now is None else now
    host, _, pid = trial.user_attrs.get('worker', ':').rpartition(':')
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not process_exists(int(pid)):
        return True
    heartbeat = trial.user_attrs.get('heartbeat', trial.datetime_start.timestamp() if trial.datetime_start else now)
    return now - heartbeat > stale_after_s


def process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study, storage, stale_after_s):
    """Mark the running trials of stopped workers failed and queue their parameters again; returns their numbers.
    Several workers may do this at once: the storage lets exactly one of them fail each trial."""
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get('worker') == worker_name() or not is_stale(trial, stale_after_s):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if not storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            continue
        study.enqueue_trial(trial.params, user_attrs={'retry_of': trial.number}, skip_if_exists=False)
        failed.append(trial.number)
    return failed
