"""A search shared through a real PostgreSQL database (--storage postgresql://...), as Sample_Runs/slurm_search.sh
runs one: a throwaway server (tests/postgresql_server.py), two workers at once on one study, and a killed worker
whose trial is failed and queued again. The trials' runs are a stand-in for main.py (--launcher) that writes a
summary.json per epoch and notes every run it starts, so that a trial run twice or lost shows."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import postgresql_server
from postgresql_server import REQUIRED, PostgreSQLServer, Unavailable, not_here
from runs import ROOT
from tuning.study import storage_of

FAKE_MAIN = """
import json, os, sys, time
arguments = sys.argv[2:]  # sys.argv[1] is main.py, which this stand-in does not run
value = lambda flag: arguments[len(arguments) - arguments[::-1].index(flag)]  # the last one counts, as in argparse
with open(os.environ['RUNS_LOG'], 'a') as log:
    log.write(value('--savename') + '\\n')
folder = os.path.join(value('--save_path'), value('--dataset'), value('--savename'))
os.makedirs(folder)
history = []
for epoch in range(int(value('--n_epochs'))):
    time.sleep(float(os.environ.get('EPOCH_S', '0.5')))
    history.append({'epoch': epoch, 'val_mAP@R': float(value('--kd_lambda')) / 100 + epoch / 100})
    with open(os.path.join(folder, 'summary.tmp'), 'w') as stream:
        json.dump({'history': history}, stream)
    os.replace(os.path.join(folder, 'summary.tmp'), os.path.join(folder, 'summary.json'))
"""


@pytest.fixture(scope='module')
def server():
    try:
        with PostgreSQLServer() as running:
            yield running
    except Unavailable as why:
        not_here(why)


def test_a_missing_server_skips_except_where_ci_requires_it(monkeypatch):
    monkeypatch.setattr(postgresql_server.shutil, 'which', lambda name: None)
    monkeypatch.setattr(postgresql_server.glob, 'glob', lambda pattern: [])
    with pytest.raises(Unavailable, match='initdb and pg_ctl are not installed') as missing:
        PostgreSQLServer()
    monkeypatch.delenv(REQUIRED, raising=False)
    with pytest.raises(pytest.skip.Exception):
        not_here(missing.value)
    monkeypatch.setenv(REQUIRED, '1')
    with pytest.raises(pytest.fail.Exception, match='is set and no PostgreSQL server can start'):
        not_here(missing.value)


class Workers:
    """Hyperparameter_Search.py processes on one study in `database` of the server, trials run by FAKE_MAIN."""

    def __init__(self, source, tmp_path, url):
        self.source, self.tmp_path, self.url = source, tmp_path, url
        self.fake = tmp_path / 'fake_main.py'
        self.fake.write_text(FAKE_MAIN)
        self.runs_log = tmp_path / 'runs.log'
        self.runs_log.write_text('')

    def start(self, n_trials, epoch_s=0.5):
        command = [sys.executable, os.path.join(ROOT, 'Hyperparameter_Search.py'), '--dataset', 'cub200', '--source',
                   str(self.source), '--save_path', str(self.tmp_path / 'runs'), '--n_epochs', '2', '--kernels', '0',
                   '--tv_split_perc', '0.5', '--bs', '8', '--samples_per_class', '4', '--space',
                   'kd_lambda=log:10:200', '--storage', self.url, '--study', 'shared', '--n_trials', str(n_trials),
                   '--pruner', 'none', '--launcher', f'{sys.executable} {self.fake}']
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, 'RUNS_LOG': str(self.runs_log),
                                                             'EPOCH_S': str(epoch_s)})

    def runs(self):
        return self.runs_log.read_text().split()

    def study(self):
        return optuna.load_study(study_name='shared', storage=storage_of(self.url, str(self.tmp_path)))


def finished(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, out + err
    return out


@pytest.fixture
def workers(server, make_cub200, tmp_path, request):
    return Workers(make_cub200(n_classes=8, per_class=4), tmp_path, server.create_database(request.node.name.lower()))


def test_workers_starting_at_once_on_an_empty_database_retry_until_the_tables_exist(server, monkeypatch):
    """What two workers of a SLURM array started at once met: all but one fail to create Optuna's tables."""
    import sqlalchemy

    url, opened = server.create_database('empty_at_start'), []
    get_storage = optuna.storages.get_storage

    def another_worker_creates_the_tables_first(address):
        opened.append(address)
        if len(opened) == 1:
            get_storage(address)  # the other worker, done first
            raise sqlalchemy.exc.IntegrityError('CREATE TYPE trialstate ...', {}, Exception(
                'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'))
        return get_storage(address)

    monkeypatch.setattr(optuna.storages, 'get_storage', another_worker_creates_the_tables_first)
    monkeypatch.setattr(time, 'sleep', lambda seconds: None)
    storage = storage_of(url, '.')
    assert len(opened) == 2 and all(address.startswith('postgresql+psycopg://postgres@/') for address in opened)
    assert optuna.create_study(study_name='s', storage=storage).study_name == 's'


@pytest.mark.slow
def test_two_workers_on_one_postgresql_study_run_every_trial_once(workers):
    first, second = workers.start(n_trials=3), workers.start(n_trials=3)
    finished(first), finished(second)
    trials = workers.study().trials
    assert sorted(trial.number for trial in trials) == list(range(6)), 'exactly the 3 + 3 trials asked for'
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 6
    names = [os.path.basename(trial.user_attrs['run_folders'][0]) for trial in trials]
    assert sorted(workers.runs()) == sorted(names) == [f'shared_t{number:04d}' for number in range(6)], \
        'each trial ran once: none lost, none run twice'
    workers_of = {trial.user_attrs['worker'] for trial in trials}
    assert len(workers_of) == 2, 'both workers ran trials'
    for trial in trials:
        assert trial.value == pytest.approx(trial.params['kd_lambda'] / 100 + 0.01), 'each value is its own run\'s'


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_queued_again(workers):
    killed = workers.start(n_trials=1, epoch_s=60)
    deadline = time.monotonic() + 120
    while not workers.runs():
        assert time.monotonic() < deadline and killed.poll() is None, killed.communicate()
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # the worker and its run, as a node failure
    killed.communicate()
    out = finished(workers.start(n_trials=1))
    assert 'trial 0 was left running by a worker that stopped: failed, its parameters queued again' in out
    lost, retried = workers.study().trials
    assert lost.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.user_attrs['retry_of'] == 0 and retried.params == lost.params
    assert workers.runs() == ['shared_t0000', 'shared_t0001']
