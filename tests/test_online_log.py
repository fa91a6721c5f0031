"""--log_online: a W&B that cannot be reached or fails mid-run never ends a run nor costs it a record.
Nothing here reaches the network: W&B is pointed at a closed port of 127.0.0.1, or replaced by a fake."""
import glob
import socket
import sys
import types

import pytest
import torch

from runs import read_summary, run_main, run_script, tiny_run_flags
from reporting import online_log

FAKE_KEY = '0123456789abcdef0123456789abcdef01234567'  # well-formed, belongs to no one
RUN_FILES = {'config.json', 'summary.json', 'metrics.csv', 'log.txt', 'curves.png', 'retrieval.png', 'last.pth',
             'best_e_recall@1.pth', 'best_nmi.pth'}


@pytest.fixture
def refused_url():
    """http://127.0.0.1:PORT where nothing listens: the port is held (bound, never listening) for the test."""
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', 0))
        yield f'http://127.0.0.1:{holder.getsockname()[1]}'


def wandb_environment(tmp_path, base_url):
    """A user's W&B set-up (a key, W&B mode unset) whose W&B lives at `base_url`; W&B's own files under tmp_path."""
    return {'WANDB_MODE': None, 'WANDB_API_KEY': FAKE_KEY, 'WANDB_BASE_URL': base_url, 'WANDB_INIT_TIMEOUT': '2',
            **{f'WANDB_{name}_DIR': str(tmp_path / 'wandb_home' / name.lower())
               for name in ('CONFIG', 'CACHE', 'DATA', 'ARTIFACT')}}


@pytest.mark.slow
def test_a_wandb_out_of_reach_leaves_an_offline_run_and_a_complete_run_folder(refused_url, make_cub200, tmp_path):
    flags = tiny_run_flags(make_cub200(n_classes=4, per_class=4), tmp_path, **{'--log_online': None, '--n_epochs': 1})
    result = run_script('main.py', *flags, env=wandb_environment(tmp_path, refused_url), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / 'cub200' / 'tiny'
    assert RUN_FILES <= {path.name for path in folder.iterdir()}
    assert len(read_summary(folder)['history']) == 1
    run_id = torch.load(folder / 'last.pth', weights_only=True)['training_state']['online_run_id']
    offline, = glob.glob(str(folder / 'wandb' / f'offline-run-*-{run_id}'))  # the id a resume continues with
    assert glob.glob(f'{offline}/run-{run_id}.wandb')
    warning = 'W&B could not start online (CommError'
    assert result.stdout.count(warning) == 1 and (folder / 'log.txt').read_text().count(warning) == 1
    assert f'`wandb sync {folder / "wandb"}` uploads it later' in result.stdout


class FakeRun:
    def __init__(self, run_id, fail_log_at=None, fail_finish=False):
        self.id, self.fail_log_at, self.fail_finish = run_id, fail_log_at, fail_finish
        self.steps, self.finished = [], False

    def log(self, entry, step):
        if step == self.fail_log_at:
            raise ConnectionError('W&B service dropped out')
        self.steps.append(step)

    def finish(self):
        self.finished = True
        if self.fail_finish:
            raise TimeoutError('Timed out finishing run.')


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in for the wandb module: `fake.online` says what wandb.init does online ('ok' or an exception to
    raise); every init's arguments are in fake.calls, every run in fake.runs."""
    fake = types.SimpleNamespace(online='ok', run_options={}, calls=[], runs=[], teardowns=0)

    def init(**arguments):
        fake.calls.append(arguments)
        if arguments.get('mode') != 'offline' and fake.online != 'ok':
            raise fake.online
        fake.runs.append(FakeRun(arguments['id'], **fake.run_options))
        return fake.runs[-1]

    def teardown():
        fake.teardowns += 1

    module = types.SimpleNamespace(init=init, teardown=teardown, Settings=dict, Image=lambda path: path)
    monkeypatch.setitem(sys.modules, 'wandb', module)
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY)
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.delenv('WANDB_INIT_TIMEOUT', raising=False)
    return fake


def warnings(folder, text):
    """The warnings of the run's log.txt that contain `text`."""
    return [line for line in (folder / 'log.txt').read_text().splitlines() if ' WARNING ' in line and text in line]


@pytest.mark.parametrize('options, epochs, sent, message', [
    ({'fail_log_at': 1}, 3, [0], 'W&B failed to log epoch 1 (ConnectionError: W&B service dropped out): W&B gets no'),
    ({'fail_finish': True}, 1, [0], 'W&B failed to finish (TimeoutError: Timed out finishing run.)'),
])
@pytest.mark.slow
def test_a_wandb_failing_mid_run_costs_one_warning_and_no_record(options, epochs, sent, message, fake_wandb,
                                                                 make_cub200, tmp_path):
    fake_wandb.run_options = options
    flags = tiny_run_flags(make_cub200(n_classes=4, per_class=4), tmp_path, **{'--log_online': None,
                                                                              '--n_epochs': epochs})
    assert run_main(*flags) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    assert [entry['epoch'] for entry in read_summary(folder)['history']] == list(range(epochs))
    assert RUN_FILES <= {path.name for path in folder.iterdir()} and not (folder / 'run.lock').exists()
    run, = fake_wandb.runs
    assert run.steps == sent and run.finished
    assert len(warnings(folder, 'W&B failed')) == 1 and warnings(folder, message)


@pytest.mark.slow
def test_a_resumed_run_keeps_its_wandb_run_id_offline_and_online(fake_wandb, make_cub200, tmp_path):
    fake_wandb.online = ConnectionRefusedError('connection refused')
    flags = tiny_run_flags(make_cub200(n_classes=4, per_class=4), tmp_path, **{'--log_online': None, '--n_epochs': 1})
    assert run_main(*flags) == 0
    online, offline = fake_wandb.calls
    assert 'mode' not in online and offline['mode'] == 'offline' and offline['id'] == online['id']
    assert fake_wandb.teardowns == 1, 'the failed attempt is let go before the offline run starts'
    assert online['settings']['init_timeout'] == online_log.INIT_WAIT_S <= 60
    folder = tmp_path / 'cub200' / 'tiny'
    assert len(warnings(folder, 'W&B could not start online (ConnectionRefusedError: connection refused)')) == 1
    fake_wandb.online = 'ok'
    assert run_main('--resume', folder, '--n_epochs', '2') == 0
    assert [call['id'] for call in fake_wandb.calls] == [online['id']] * 3, 'W&B online again: the same run'


def test_the_wait_for_wandb_is_bounded_and_fits_the_collective_timeout(monkeypatch):
    monkeypatch.delenv('WANDB_INIT_TIMEOUT', raising=False)
    assert online_log.online_settings()['init_timeout'] == online_log.INIT_WAIT_S <= 60
    assert online_log.online_settings(30 * 60)['init_timeout'] == online_log.INIT_WAIT_S
    assert online_log.online_settings(0.5 * 60)['init_timeout'] == 15, '--dist_timeout 0.5: the others wait 30 s'
    settings = online_log.online_settings()
    assert settings['finish_timeout'] == online_log.FINISH_WAIT_S and settings['finish_timeout_raises']
    monkeypatch.setenv('WANDB_INIT_TIMEOUT', '120')
    assert 'init_timeout' not in online_log.online_settings(), 'W&B reads the user\'s own setting'


def test_an_epochs_spectrum_goes_to_wandb_as_a_histogram_and_numbers_as_they_are():
    """rho_spectrum@0 is a list per epoch: W&B gets it as the authors logged it, a histogram over the indices."""
    import wandb

    from reporting.online_log import OnlineLog

    logged = []
    online = OnlineLog(False, 'p', 'g', 'n', {}, '.')
    online.run = types.SimpleNamespace(log=lambda entry, step: logged.append((entry, step)))
    online.log({'epoch': 3, 'e_recall@1': 0.5, 'rho_spectrum@0': [0.5, 0.3, 0.2]})
    (entry, step), = logged
    assert step == 3 and entry['e_recall@1'] == 0.5
    assert isinstance(entry['rho_spectrum@0'], wandb.Histogram)
    assert entry['rho_spectrum@0'].histogram == [0.5, 0.3, 0.2] and entry['rho_spectrum@0'].bins == [0, 1, 2, 3]
