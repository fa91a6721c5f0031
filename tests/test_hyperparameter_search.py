"""Hyperparameter_Search.py: the space, the trials on validation data only (values equal to their runs' validation
metrics, no test metric computed), resuming and sharing a study, stale trials of stopped workers, the report and the
final runs."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import Hyperparameter_Search
import parameters
from plumbing.errors import UserError
from runs import ROOT, TINY_ARCH, one_line_error, read_summary, run_entry_point
from tuning import report
from tuning.objective import Trials
from tuning.pruning import FOLD_STEPS
from tuning.space import flag_actions, parse_space
from tuning.study import JOURNAL_FILE, fail_stale_trials, open_study, storage_of
from tuning.trial_run import RunFailed, RunStopped, run_watched

ACTIONS = flag_actions(parameters.build_parser())


@pytest.fixture(autouse=True)
def wandb_disabled(monkeypatch):
    """No W&B for the searches and trials these tests run in this process (search() sets it for its own)."""
    monkeypatch.setenv('WANDB_MODE', 'disabled')


def test_a_space_names_flags_and_the_ranges_optuna_samples_them_from():
    dimensions = parse_space(['kd_lambda=log:10:200', 'diffusion_w=0.5:0.999', 'n_epochs=2:4', 'embed_dim=8:64',
                              'optim=choice:adam,adamw', 'OBDP=choice:true,false', 'tau=choice:3,5'], ACTIONS, set())
    by_flag = {dimension.flag: dimension for dimension in dimensions}
    assert (by_flag['kd_lambda'].kind, by_flag['kd_lambda'].low, by_flag['kd_lambda'].high,
            by_flag['kd_lambda'].log) == ('float', 10.0, 200.0, True)
    assert (by_flag['diffusion_w'].kind, by_flag['diffusion_w'].log) == ('float', False)
    assert by_flag['n_epochs'].kind == 'int' and (by_flag['n_epochs'].low, by_flag['n_epochs'].high) == (2, 4)
    assert by_flag['embed_dim'].kind == 'int' and (by_flag['embed_dim'].low, by_flag['embed_dim'].high) == (8, 64)
    assert by_flag['optim'].choices == ('adam', 'adamw') and by_flag['tau'].choices == (3, 5)
    assert by_flag['OBDP'].arguments(True) == ['--OBDP'] and by_flag['OBDP'].arguments(False) == []
    assert by_flag['kd_lambda'].arguments(57.5) == ['--kd_lambda', '57.5']


@pytest.mark.parametrize('texts, given, message', [
    (['kd_lamda=log:10:200'], set(), 'main.py has no flag --kd_lamda (did you mean kd_lambda'),
    (['save_path=choice:a,b'], set(), 'says where data and runs are or is set by the search itself'),
    (['diffusion_w=0.9:0.5'], set(), 'the range 0.9..0.5 is empty'),
    (['diffusion_w=0.5:0.5'], set(), 'is empty'),
    (['lr=log:0:1e-3'], set(), 'a log range needs low > 0'),
    (['lr=log:a:b'], set(), 'are not two numbers'),
    (['embed_dim=8.5:64'], set(), 'are not two integers'),
    (['lr=1e-5'], set(), 'a range is low:high'),
    (['optim=choice:adam,rmsprop'], set(), "'rmsprop' is not one of --optim's choices"),
    (['optim=0:1'], set(), 'search it as optim=choice:adam,adamw,sgd'),
    (['PSD=0:1'], set(), 'search it as PSD=choice:true,false'),
    (['PSD=choice:yes'], set(), 'is on or off: choice:true,false'),
    (['kd_lambda'], set(), 'write FLAG=SPEC'),
    (['lr=log:1e-6:1e-4', 'lr=log:1e-5:1e-3'], set(), 'names --lr twice'),
    (['lr=log:1e-6:1e-4'], {'lr'}, '--lr is both a flag of the base run and searched'),
    ([], set(), 'the search needs a space'),
])
def test_a_bad_space_is_one_line_error(texts, given, message):
    with pytest.raises(UserError, match=message.replace('(', r'\(').replace('.', r'\.')):
        parse_space(texts, ACTIONS, given)


@pytest.fixture
def source(make_cub200):
    """A CUB200-layout folder whose 4 training classes give 2 training and 2 validation classes."""
    return make_cub200(n_classes=8, per_class=4)


def base_flags(source, save_path, *extra):
    return ['--dataset', 'cub200', '--source', str(source), '--save_path', str(save_path), '--arch',
            TINY_ARCH, '--not_pretrained', '--image_size', '32', '--bs', '8', '--samples_per_class', '4',
            '--n_epochs', '2', '--kernels', '0', '--embed_dim', '16', '--lr', '1e-3', '--tv_split_perc', '0.5',
            '--PSD', '--OBDP', *extra]


@pytest.mark.parametrize('extra, message', [
    (['--space', 'decay=-1:1'], '--space decay: main.py refuses its value -1.0: --decay must be non-negative'),
    (['--space', 'diffusion_w=0.5:1.5'], 'main.py refuses its value 1.5: --diffusion_w must be in [0, 1)'),
    (['--space', 'kd_lambda=1:10', '--objective', 'nmi2'], '--objective nmi2 is not among --evaluation_metrics'),
    (['--space', 'kd_lambda=1:10', '--evaluation_metrics', 'nmi', 'dists@intra', '--objective', 'dists@intra'],
     '--objective dists@intra measures the embedding space and has no best value'),
    (['--space', 'kd_lambda=1:10', '--cv_folds', '2', '--cv_fold', '1'], 'drop --cv_fold'),
    (['--space', 'kd_lambda=1:10', '--cv_folds', '5'], '--cv_folds 5 leaves fold 0 1 of the 4 training classes'),
    (['--space', 'kd_lambda=1:10', '--tv_split_perc', '0.8'], 'the validation split would have 1 class'),
    (['--space', 'kd_lambda=1:10', '--bs', '7'], '--bs 7 is not divisible'),
])
def test_a_bad_search_is_one_line_before_anything_trains(source, tmp_path, capsys, extra, message):
    code = run_entry_point('Hyperparameter_Search', *base_flags(source, tmp_path), *extra)  # the last value counts
    assert message in one_line_error(capsys, code)
    assert os.listdir(tmp_path) == [], 'nothing is written before the search can run'


def test_trial_runs_validate_without_the_test_split_and_name_their_run_folders(tmp_path):
    dimensions = parse_space(['kd_lambda=log:10:200', 'OBDP=choice:true,false'], ACTIONS, set())
    trials = Trials(study_name='s', base=['--dataset', 'digits'], dimensions=dimensions, metric='val_mAP@R',
                    folds=2, folder=str(tmp_path), dataset='digits')
    assert trials.arguments({'kd_lambda': 20.0, 'OBDP': False}, 7, 1) == [
        '--dataset', 'digits', '--kd_lambda', '20.0', '--cv_folds', '2', '--cv_fold', '1', '--no_test_metrics',
        '--storage_metrics', 'val_mAP@R', '--save_path', str(tmp_path), '--group', 's', '--savename', 's_t0007_f1']
    assert trials.run_folder(7, 1) == str(tmp_path / 'digits' / 's_t0007_f1')
    plain = Trials(study_name='s', base=['--dataset', 'digits'], dimensions=[], metric='val_e_recall@1',
                   folds=None, folder=str(tmp_path), dataset='digits', with_test=True)
    assert plain.arguments({}, 0) == ['--dataset', 'digits', '--use_tv_split', '--storage_metrics', 'val_e_recall@1',
                                      '--save_path', str(tmp_path), '--group', 's', '--savename', 's_t0000']


FAKE_RUN = """
import json, os, sys, time
folder, epochs, code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(folder, exist_ok=True)
history = []
for epoch in range(epochs):
    history.append({'epoch': epoch, 'val_mAP@R': 0.1 * (epoch + 1)})
    with open(os.path.join(folder, 'summary.json.tmp'), 'w') as stream:
        json.dump({'history': history}, stream)
    os.replace(os.path.join(folder, 'summary.json.tmp'), os.path.join(folder, 'summary.json'))
    time.sleep(0.3)
print('error: the last line', file=sys.stderr)
sys.exit(code)
"""


def fake_run(tmp_path, epochs, code=0):
    return [sys.executable, '-c', FAKE_RUN, str(tmp_path / 'run'), str(epochs), str(code)], tmp_path / 'run'


def test_a_watched_run_reports_every_epoch_and_ends_with_its_history(tmp_path):
    command, folder = fake_run(tmp_path, 4)
    seen = []
    history = run_watched(command, str(folder), str(tmp_path / 'out'), lambda entry: seen.append(entry) and False,
                          lambda: False)
    assert [entry['epoch'] for entry in seen] == [0, 1, 2, 3] and history == seen


def test_a_pruned_run_is_stopped_and_a_failed_one_names_its_error(tmp_path):
    command, folder = fake_run(tmp_path, 50)
    started = time.monotonic()
    with pytest.raises(RunStopped):
        run_watched(command, str(folder), str(tmp_path / 'out'), lambda entry: entry['epoch'] == 1, lambda: False)
    assert len(json.loads((folder / 'summary.json').read_text())['history']) < 50, 'stopped, not left to finish'
    assert time.monotonic() - started < 60
    command, folder = fake_run(tmp_path / 'failing', 1, code=2)
    with pytest.raises(RunFailed, match='exited 2: error: the last line'):
        run_watched(command, str(folder), str(tmp_path / 'out2'), lambda entry: False, lambda: False)


@pytest.mark.parametrize('database', [False, True], ids=['journal file', 'sqlite'])
def test_the_trials_of_stopped_workers_are_failed_and_queued_again(tmp_path, monkeypatch, database):
    storage = storage_of(f'sqlite:///{tmp_path}/study.db' if database else None, str(tmp_path))
    study = open_study('s', storage, {'space': ['x']}, optuna.pruners.NopPruner())
    host = os.uname().nodename
    dead, stamped_long_ago, alive = (study.ask({'x': optuna.distributions.FloatDistribution(0, 1)})
                                     for _ in range(3))
    monkeypatch.setattr('socket.gethostname', lambda: host)
    dead.set_user_attr('worker', f'{host}:{2 ** 22 + 12345}')  # a pid that does not exist
    dead.set_user_attr('heartbeat', time.time())
    stamped_long_ago.set_user_attr('worker', 'elsewhere:1')
    stamped_long_ago.set_user_attr('heartbeat', time.time() - 3600)
    alive.set_user_attr('worker', 'elsewhere:2')
    alive.set_user_attr('heartbeat', time.time())
    assert sorted(fail_stale_trials(study, storage, stale_after_s=600)) == [dead.number, stamped_long_ago.number]
    states = {trial.number: trial.state for trial in study.get_trials()}
    assert states[dead.number] == states[stamped_long_ago.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(trial.user_attrs['retry_of'] for trial in queued) == [dead.number, stamped_long_ago.number]
    assert {trial.user_attrs['retry_of']: trial.system_attrs['fixed_params']['x'] for trial in queued} == {
        dead.number: dead.params['x'], stamped_long_ago.number: stamped_long_ago.params['x']}
    assert fail_stale_trials(study, storage, stale_after_s=600) == [], 'each stale trial is failed once'


def test_a_study_continues_only_with_the_setting_it_was_started_with(tmp_path):
    storage = storage_of(None, str(tmp_path))
    open_study('s', storage, {'space': ['kd_lambda=log:10:200']}, optuna.pruners.NopPruner())
    assert open_study('s', storage, {'space': ['kd_lambda=log:10:200']}, optuna.pruners.NopPruner())
    with pytest.raises(UserError, match='study s was started with another space'):
        open_study('s', storage, {'space': ['kd_lambda=log:1:20']}, optuna.pruners.NopPruner())


def test_trial_lines_and_the_trial_table_say_what_happened(tmp_path):
    study = optuna.create_study(direction='maximize')
    distribution = {'kd_lambda': optuna.distributions.FloatDistribution(1, 100)}
    for number, (state, value) in enumerate([(TrialState.COMPLETE, 0.4), (TrialState.COMPLETE, 0.6),
                                             (TrialState.PRUNED, None), (TrialState.FAIL, None)]):
        attrs = {'pruned_at': {'fold': None, 'epoch': 1, 'value': 0.2}} if state == TrialState.PRUNED else (
            {'error': 'main.py exited 2: error: bad'} if state == TrialState.FAIL else
            {'fold_values': [value], 'run_folders': [f'/runs/t{number}']})
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params={'kd_lambda': 10.0 * (number + 1)},
                                                  distributions=distribution, user_attrs=attrs))
    lines = [report.trial_line(study, trial, 'val_mAP@R') for trial in study.trials]
    assert lines == ['trial 0 finished: val_mAP@R 0.4000 (best 0.6000, trial 1) | kd_lambda 10',
                     'trial 1 finished: val_mAP@R 0.6000 (best 0.6000, trial 1) | kd_lambda 20',
                     'trial 2 pruned after epoch 1: val_mAP@R 0.2000 (best 0.6000, trial 1) | kd_lambda 30',
                     'trial 3 failed: main.py exited 2: error: bad | kd_lambda 40']
    best, skipped = report.write_report(study, str(tmp_path), 'val_mAP@R')
    assert best.number == 1 and skipped == {}
    rows = (tmp_path / 'trials.csv').read_text().splitlines()
    assert rows[0] == 'number,state,value,kd_lambda,fold_values,run_folders,started,finished,retry_of'
    assert rows[2].startswith('1,finished,0.6,20.0,0.6,/runs/t1,')
    assert json.loads((tmp_path / 'best.json').read_text())['params'] == {'kd_lambda': 20.0}
    assert (tmp_path / 'optimization_history.png').read_bytes()[:4] == b'\x89PNG'
    assert (tmp_path / 'param_importances.png').read_bytes()[:4] == b'\x89PNG'


def search_flags(source, save_path, *extra):
    """The search of these tests: the base run, kd_lambda and diffusion_w searched."""
    return [*base_flags(source, save_path), '--space', 'kd_lambda=log:10:200', 'diffusion_w=0.5:0.999', *extra]


def search(source, save_path, *extra, env=None):
    """Hyperparameter_Search.py as a user runs it (a process of its own)."""
    command = [sys.executable, os.path.join(ROOT, 'Hyperparameter_Search.py'), *search_flags(source, save_path, *extra)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'WANDB_MODE': 'disabled', **(env or {})}, start_new_session=True)


def search_here(capsys, source, save_path, *extra):
    """Hyperparameter_Search.py's main in this process (its trials are processes all the same): its stdout."""
    code = run_entry_point('Hyperparameter_Search', *search_flags(source, save_path, *extra))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def finished(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def load(save_path, name='cub200_search'):
    folder = save_path / 'hyperparameter_search' / name
    return folder, optuna.load_study(study_name=name, storage=storage_of(None, str(folder)))


@pytest.mark.slow
def test_a_search_trains_on_validation_only_resumes_and_ends_with_its_report_and_final_runs(source, tmp_path, capsys):
    out = search_here(capsys, source, tmp_path, '--use_tv_split', '--n_trials', '2')
    folder, study = load(tmp_path)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 2
    assert out.count(' finished: val_mAP@R ') == 2 and 'best: trial' in out
    for trial in study.trials:
        (run_folder,) = trial.user_attrs['run_folders']
        summary = read_summary(run_folder)
        assert trial.value == max(entry['val_mAP@R'] for entry in summary['history']), 'the value is validation\'s'
        assert all(not name.startswith(('e_recall', 'nmi', 'f1', 'mAP')) for entry in summary['history']
                   for name in entry), 'no test metric is computed during the search'
        assert 'testing' not in summary['sessions'][0]['split_sizes'], 'no test image is read'
        assert summary['config']['kd_lambda'] == trial.params['kd_lambda']
        assert summary['config']['group'] == 'cub200_search'
    for name in ('trials.csv', 'best.json', 'optimization_history.png', 'param_importances.png'):
        assert (folder / name).is_file(), name

    out = search_here(capsys, source, tmp_path, '--use_tv_split', '--n_trials', '1', '--final_runs', '3')
    _, study = load(tmp_path)
    assert len(study.trials) == 3 and 'study cub200_search (2 trials so far)' in out
    best = max(study.trials, key=lambda trial: trial.value)
    final = read_summary(folder / 'cub200' / 'cub200_search_final_s3')
    assert final['config']['kd_lambda'] == best.params['kd_lambda'] and final['config']['seed'] == 3
    assert not final['config']['use_tv_split'] and final['config']['cv_folds'] is None
    assert final['sessions'][0]['split_sizes'] == {'training': 16, 'testing': 16}, 'all 4 training classes train'
    assert ['e_recall@1' in entry for entry in final['history']] == [False, True], 'tested once, after the end'
    table = (folder / 'final' / 'results.md').read_text()
    assert 'cub200_search_final' in table and 'last epoch' in table


@pytest.mark.slow
def test_two_searches_at_once_share_one_study_without_losing_a_trial(source, tmp_path, capsys):
    other = search(source, tmp_path, '--n_trials', '1')  # a process of its own, and meanwhile one in this process
    search_here(capsys, source, tmp_path, '--n_trials', '1')
    finished(other)
    _, study = load(tmp_path)
    assert sorted(trial.number for trial in study.trials) == [0, 1]
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 2
    folders = [trial.user_attrs['run_folders'][0] for trial in study.trials]
    assert len(set(folders)) == 2 and all(os.path.isfile(os.path.join(path, 'summary.json')) for path in folders)


def wait_for_the_first_trial_run(process, save_path):
    """Until the search `process` has started its first trial's run (that run has written its config.json)."""
    run_folder = save_path / 'hyperparameter_search' / 'cub200_search' / 'cub200' / 'cub200_search_t0000'
    deadline = time.monotonic() + 300
    while not (run_folder / 'config.json').exists():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.5)


@pytest.mark.slow
def test_a_killed_worker_does_not_block_the_study_its_trial_runs_again(source, tmp_path, capsys):
    killed = search(source, tmp_path, '--n_trials', '1')
    wait_for_the_first_trial_run(killed, tmp_path)
    os.killpg(killed.pid, signal.SIGKILL)  # the worker and its run, as a node failure
    killed.wait()
    out = search_here(capsys, source, tmp_path, '--n_trials', '1')
    assert 'trial 0 was left running by a worker that stopped: failed, its parameters queued again' in out
    _, study = load(tmp_path)
    (retried,) = [trial for trial in study.trials if trial.user_attrs.get('retry_of') == 0]
    assert study.trials[0].state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.params == study.trials[0].params


@pytest.mark.slow
def test_sigterm_stops_the_search_after_its_running_trial_whose_parameters_are_queued_again(source, tmp_path):
    searching = search(source, tmp_path, '--n_trials', '2')
    wait_for_the_first_trial_run(searching, tmp_path)
    os.kill(searching.pid, signal.SIGTERM)  # the search alone: it stops its trial's run itself
    out, err = searching.communicate(timeout=300)
    assert searching.returncode == 128 + signal.SIGTERM, err
    assert 'SIGTERM received: stopping the running trial; its parameters are queued again' in out
    _, study = load(tmp_path)
    first, queued = study.trials
    assert first.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.user_attrs['retry_of'] == 0 and queued.system_attrs['fixed_params'] == first.params  # enqueued


def test_the_default_storage_is_a_journal_file_in_the_study_folder(tmp_path):
    storage = storage_of(None, str(tmp_path))
    open_study('s', storage, {}, optuna.pruners.NopPruner())
    assert (tmp_path / JOURNAL_FILE).is_file()
    assert optuna.load_study(study_name='s', storage=storage_of(None, str(tmp_path))).study_name == 's'
    with pytest.raises(UserError, match='--storage nosuch://x: Optuna cannot open it'):
        storage_of('nosuch://x', str(tmp_path))


def test_the_study_folder_is_not_named_like_the_search_package(source, tmp_path, capsys):
    assert run_entry_point('Hyperparameter_Search', *base_flags(source, tmp_path), '--space', 'kd_lambda=1:10',
                           '--n_trials', '0') == 0
    assert os.listdir(tmp_path) == ['hyperparameter_search']
    assert (tmp_path / 'hyperparameter_search' / 'cub200_search' / JOURNAL_FILE).is_file()
    # A study that an earlier version kept in <save_path>/search/<study> is not started again elsewhere.
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'search' / 'cub200_search').mkdir(parents=True)
    capsys.readouterr()
    code = run_entry_point('Hyperparameter_Search', *base_flags(source, tmp_path / 'old'), '--space', 'kd_lambda=1:10',
                           '--n_trials', '0')
    assert f'mv {tmp_path / "old" / "search" / "cub200_search"} ' in one_line_error(capsys, code)
    assert os.listdir(tmp_path / 'old') == ['search']


@pytest.mark.parametrize('validation', [
    ['--use_tv_split', '--tv_split_perc', '0.6'], ['--tv_split_perc=0.6', '--use_tv_split', '--no_test_metrics'],
    ['--use_tv', '--tv_split_p', '0.6', '--tv_split_by_samples'], ['--cv_folds', '3']])
def test_final_runs_train_on_every_training_class_whatever_the_validation_flags(tmp_path, validation):
    argv = ['--dataset', 'digits', '--n_epochs', '2', *validation, '--lr', '1e-4', '--space', 'kd_lambda=1:10']
    opt, base = Hyperparameter_Search.build_parser().parse_known_args(argv)
    base, folds = Hyperparameter_Search.split_folds(base)
    trials = Trials(study_name='s', base=base, dimensions=parse_space(opt.space, ACTIONS, set()), metric='val_mAP@R',
                    folds=folds, folder=str(tmp_path), dataset='digits')
    arguments = Hyperparameter_Search.final_run_arguments(trials, {'kd_lambda': 5.0}, 7, 2)
    final = parameters.parse_args(arguments)
    assert not final.use_tv_split and not final.tv_split_by_samples and not final.no_test_metrics
    assert final.tv_split_perc == parameters.build_parser().get_default('tv_split_perc')
    assert final.cv_folds is None and final.cv_fold is None
    assert (final.lr, final.kd_lambda, final.seed, final.evaluate_every) == (1e-4, 5.0, 7, 2)
    assert final.savename == 's_final_s7' and final.save_path == str(tmp_path)


def test_final_runs_that_main_would_refuse_are_refused_before_the_search(source, tmp_path, capsys):
    code = run_entry_point('Hyperparameter_Search', *base_flags(source, tmp_path), '--space', 'kd_lambda=1:10',
                           '--use_tv_split', '--storage_metrics', 'val_mAP@R', '--final_runs', '0')
    error = one_line_error(capsys, code)
    assert error.startswith('error: --final_runs: main.py refuses the final runs\' flags') and 'val_mAP@R' in error
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_relative_paths_mean_what_they_meant_where_the_search_was_started(make_image_folder, tmp_path, capsys,
                                                                          monkeypatch):
    images = make_image_folder({'train': {f'c{k}': 4 for k in range(4)}, 'test': {'t0': 4, 't1': 4}})
    work = tmp_path / 'work'
    shutil.copytree(images, work / 'fds')
    (work / 'lists').mkdir()
    rows = [f'{split}/{name}/{image},{name},{split}' for split in ('train', 'test')
            for name in sorted(os.listdir(work / 'fds' / split)) for image in sorted(os.listdir(work / 'fds' / split /
                                                                                            name))]
    (work / 'lists' / 'split.csv').write_text('path,label,split\n' + '\n'.join(rows) + '\n')
    flags = ['--dataset', 'folder', '--source', 'fds', '--split_file', 'lists/split.csv', '--save_path', 'runs',
             '--arch', TINY_ARCH, '--not_pretrained', '--image_size', '32', '--bs', '8',
             '--samples_per_class', '4', '--n_epochs', '1', '--kernels', '0', '--embed_dim', '16',
             '--tv_split_perc', '0.5', '--space', 'lr=log:1e-4:1e-3', '--n_trials', '1', '--final_runs', '0']
    monkeypatch.chdir(work)  # where the search starts; its trials and final runs start in the repository
    code = run_entry_point('Hyperparameter_Search', *flags)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    folder = work / 'runs' / 'hyperparameter_search' / 'folder_search'
    study = optuna.load_study(study_name='folder_search', storage=storage_of(None, str(folder)))
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE], out
    final = read_summary(folder / 'folder' / 'folder_search_final_s0')
    assert final['sessions'][0]['split_sizes'] == {'training': 16, 'testing': 8}
    assert ['e_recall@1' in entry for entry in final['history']] == [True]


def test_module_entry_point_parses_its_own_flags_and_leaves_the_rest_to_main():
    opt, rest = Hyperparameter_Search.build_parser().parse_known_args(
        ['--space', 'lr=log:1e-6:1e-4', '--n_trials', '3', '--dataset', 'digits', '--n_epochs', '2'])
    assert opt.space == ['lr=log:1e-6:1e-4'] and opt.n_trials == 3 and rest == ['--dataset', 'digits', '--n_epochs',
                                                                                   '2']
    assert Hyperparameter_Search.split_folds(['--dataset', 'x', '--cv_folds', '3']) == (['--dataset', 'x'], 3)
    assert Hyperparameter_Search.split_folds(['--cv_folds=4', '--PSD']) == (['--PSD'], 4)


def test_the_slurm_array_script_is_a_valid_search_command():
    path = os.path.join(ROOT, 'Sample_Runs', 'slurm_search.sh')
    assert subprocess.run(['bash', '-n', path]).returncode == 0
    text = open(path).read().replace('\\\n', ' ')
    (line,) = [line for line in text.splitlines() if line.startswith('python Hyperparameter_Search.py')]
    arguments = shlex.split(line.replace('"$datapath', '"/data').replace('"$storage"', 'sqlite:///x.db'))[2:]
    opt, base = Hyperparameter_Search.build_parser().parse_known_args(arguments)
    base, folds = Hyperparameter_Search.split_folds(base)
    assert folds == 4 and opt.storage == 'sqlite:///x.db' and opt.n_trials == 4
    dimensions = parse_space(opt.space, ACTIONS, parameters.explicit_flags(parameters.build_parser(), base))
    assert [dimension.flag for dimension in dimensions] == ['kd_lambda', 'diffusion_w', 'lr']
    parameters.parse_args([*base, '--cv_folds', '4', '--cv_fold', '0', '--no_test_metrics'])


FAKE_MAIN = """
import json, os, sys, time
arguments = sys.argv[2:]  # sys.argv[1] is main.py, which this stand-in does not run
value = lambda flag: arguments[arguments.index(flag) + 1]
folder = os.path.join(value('--save_path'), value('--dataset'), value('--savename'))
os.makedirs(folder)
fold = int(value('--cv_fold')) if '--cv_fold' in arguments else 0
history = []
for epoch in range(int(value('--n_epochs'))):
    history.append({'epoch': epoch, 'val_mAP@R': float(value('--kd_lambda')) / 100 - fold / 10 + epoch / 100})
    with open(os.path.join(folder, 'summary.tmp'), 'w') as stream:
        json.dump({'history': history}, stream)
    os.replace(os.path.join(folder, 'summary.tmp'), os.path.join(folder, 'summary.json'))
    time.sleep(1.2)
"""


def fake_trials(tmp_path, folds, **options):
    launcher = tmp_path / 'fake_main.py'
    launcher.write_text(FAKE_MAIN)
    dimensions = parse_space(['kd_lambda=choice:10,50'], ACTIONS, set())
    return Trials(study_name='s', base=['--dataset', 'cub200', '--n_epochs', '3'], dimensions=dimensions,
                  metric='val_mAP@R', folds=folds, folder=str(tmp_path / 'study'), dataset='cub200',
                  launcher=[sys.executable, str(launcher)], **options)


@pytest.mark.slow
def test_a_trial_is_the_mean_of_its_folds_best_values_and_each_epoch_reaches_the_pruner(tmp_path):
    study = optuna.create_study(direction='maximize', pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({'kd_lambda': 50})
    study.optimize(fake_trials(tmp_path, folds=2), n_trials=1)
    (trial,) = study.trials
    # Fold f's epochs give 0.5 - f / 10 + e / 100: the best is epoch 2 of each.
    assert trial.user_attrs['fold_values'] == pytest.approx([0.52, 0.42])
    assert trial.value == pytest.approx(0.47)
    assert trial.intermediate_values == pytest.approx({0: 0.5, 1: 0.51, 2: 0.52, 1_000_000: 0.4, 1_000_001: 0.41,
                                                       1_000_002: 0.42})
    assert trial.user_attrs['run_folders'] == [str(tmp_path / 'study' / 'cub200' / f's_t0000_f{fold}')
                                               for fold in (0, 1)]


def finished_trials(study, values_by_fold, epochs=3):
    """Add a finished trial to `study` for each list of per-fold values (each epoch of fold f reports values[f])."""
    distribution = {'kd_lambda': optuna.distributions.CategoricalDistribution([10, 50])}
    for values in values_by_fold:
        steps = {fold * FOLD_STEPS + epoch: value for fold, value in enumerate(values) for epoch in range(epochs)}
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=sum(values) / len(values),
                                                  params={'kd_lambda': 10}, distributions=distribution,
                                                  intermediate_values=steps))


def test_the_median_pruner_compares_the_same_fold_and_epoch():
    study = optuna.create_study(direction='maximize', pruner=Hyperparameter_Search.PRUNERS['median']())
    # Five finished trials: their median is 0.4 on fold 0 and 0.5 on fold 1.
    finished_trials(study, [(0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.7)])
    trial = study.ask()
    trial.report(0.90, 0)
    assert not trial.should_prune(), 'fold 0: 0.90 is above the median 0.4'
    trial.report(0.05, FOLD_STEPS)
    assert trial.should_prune(), 'fold 1: 0.05 is below the median 0.5, whatever fold 0 gave'
    within = study.ask()
    within.report(0.45, 0)
    within.report(0.6, FOLD_STEPS)
    assert not within.should_prune()
    within.report(0.45, FOLD_STEPS + 1)
    assert not within.should_prune(), 'in its fold the trial\'s best so far (0.6) counts, as Optuna\'s own rule'
    low = study.ask()
    low.report(0.3, 0)
    assert low.should_prune(), 'fold 0 alone: 0.3 is below 0.4'
    early = optuna.create_study(direction='maximize', pruner=Hyperparameter_Search.PRUNERS['median']())
    finished_trials(early, [(0.5, 0.5)] * 4)
    first = early.ask()
    first.report(0.0, FOLD_STEPS)
    assert not first.should_prune(), 'Optuna\'s 5 startup trials: no pruning before the 6th'


@pytest.mark.slow
def test_a_trial_good_on_one_fold_is_pruned_where_it_falls_below_the_median_of_the_next(tmp_path):
    study = optuna.create_study(direction='maximize', pruner=Hyperparameter_Search.PRUNERS['median']())
    finished_trials(study, [(0.3, 0.45)] * 5)
    study.enqueue_trial({'kd_lambda': 50})  # 0.50 .. 0.52 on fold 0 (above 0.3), 0.40 .. on fold 1 (below 0.45)
    study.optimize(fake_trials(tmp_path, folds=2), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs['pruned_at'] == {'fold': 1, 'epoch': 0, 'value': pytest.approx(0.4)}
    history = json.loads((tmp_path / 'study' / 'cub200' / 's_t0005_f1' / 'summary.json').read_text())['history']
    assert len(history) < 3, 'its fold-1 run was stopped'


@pytest.mark.slow
def test_a_pruned_trial_stops_its_run_after_the_epoch_the_pruner_judged(tmp_path):
    study = optuna.create_study(direction='maximize', pruner=optuna.pruners.ThresholdPruner(lower=0.3))
    study.enqueue_trial({'kd_lambda': 10})  # 0.1 at epoch 0: below the threshold
    study.optimize(fake_trials(tmp_path, folds=None), n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and trial.user_attrs['pruned_at'] == {'fold': None, 'epoch': 0,
                                                                                  'value': 0.1}
    history = json.loads((tmp_path / 'study' / 'cub200' / 's_t0000' / 'summary.json').read_text())['history']
    assert len(history) < 3, 'the run was stopped, not left to finish'
    assert report.trial_line(study, trial, 'val_mAP@R').startswith('trial 0 pruned after epoch 0: val_mAP@R 0.1000')
