"""A search trial: the main.py runs of one sampled setting (one per cross-validation fold) on validation data only,
each epoch's validation metric reported to Optuna's pruner, and the trial's value: the mean over its folds of the
best validation value of each."""
import os
import sys
import time

from plumbing.lazy import lazy_module
from run_folder.summary import RunSummary
from tuning import study as studies
from tuning.trial_run import RunFailed, RunStopped, run_watched

optuna = lazy_module('optuna')
pruning = lazy_module('tuning.pruning')  # its FoldPruner subclasses an Optuna class: importing it imports Optuna

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'main.py')


class SearchStopped(Exception):
    """The search process was asked to stop (Ctrl-C, SIGTERM) during a trial."""


class Trials:
    """How the trials of one search run: `base` (main.py's arguments of the base run), the `dimensions` searched,
    the validation `metric` (val_...) to maximise over the epochs of each of `folds` runs (None: one run on
    --use_tv_split's validation split), the study `folder` their run folders go to, `launcher` (None: this Python;
    e.g. ['torchrun', '--nproc_per_node', '2']), `with_test`: evaluate the test split too (never read by the search),
    and `stop_requested()`: whether the search was asked to stop."""

    def __init__(self, *, study_name, base, dimensions, metric, folds, folder, dataset, launcher=None,
                 with_test=False, storage=None, stale_after_s=600, stop_requested=lambda: False):
        self.study_name, self.base, self.dimensions, self.metric = study_name, list(base), dimensions, metric
        self.folds, self.folder, self.dataset = folds, folder, dataset
        self.launcher = launcher or [sys.executable]
        self.with_test, self.storage, self.stale_after_s = with_test, storage, stale_after_s
        self.stop_requested = stop_requested
        self.current = None
        """(number, params) of the trial this process runs, or ran last."""

    def run_name(self, number, fold=None):
        return f'{self.study_name}_t{number:04d}' + ('' if fold is None else f'_f{fold}')

    def arguments(self, params, number, fold=None):
        """main.py's arguments of trial `number`'s run of `fold`."""
        protocol = ['--use_tv_split'] if fold is None else ['--cv_folds', str(self.folds), '--cv_fold', str(fold)]
        if fold is None and '--use_tv_split' in self.base:
            protocol = []
        sampled = [argument for dimension in self.dimensions
                   for argument in dimension.arguments(params[dimension.flag])]
        return [*self.base, *sampled, *protocol, *([] if self.with_test else ['--no_test_metrics']),
                '--storage_metrics', self.metric, '--save_path', self.folder, '--group', self.study_name,
                '--savename', self.run_name(number, fold)]

    def run_folder(self, number, fold=None):
        return os.path.join(self.folder, self.dataset, self.run_name(number, fold))

    def __call__(self, trial):
        """The objective: the trial's value, or optuna.TrialPruned."""
        if self.storage is not None:
            studies.fail_stale_trials(trial.study, self.storage, self.stale_after_s)
        studies.stamp(trial)
        params = {dimension.flag: dimension.suggest(trial) for dimension in self.dimensions}
        self.current = (trial.number, params)
        folds = [None] if self.folds is None else list(range(self.folds))
        trial.set_user_attr('run_folders', [self.run_folder(trial.number, fold) for fold in folds])
        values = []
        try:
            for position, fold in enumerate(folds):
                values.append(self.run_fold(trial, params, fold, position))
        except RunFailed as error:
            trial.set_user_attr('error', str(error))
            raise
        trial.set_user_attr('fold_values', values)
        return sum(values) / len(values)

    def run_fold(self, trial, params, fold, position):
        """The best validation value of one run; reports each epoch's at step position * FOLD_STEPS + epoch."""
        folder = self.run_folder(trial.number, fold)
        if os.path.exists(folder):
            raise RunFailed(f'{folder} exists already: the study folder holds runs of another study storage')
        os.makedirs(os.path.join(self.folder, 'logs'), exist_ok=True)
        command = [*self.launcher, MAIN, *self.arguments(params, trial.number, fold)]
        stamped = [time.monotonic()]

        def on_epoch(entry):
            if self.metric not in entry:
                return False
            trial.report(entry[self.metric], position * pruning.FOLD_STEPS + entry['epoch'])
            if trial.should_prune():
                trial.set_user_attr('pruned_at', {'fold': fold, 'epoch': entry['epoch'], 'value': entry[self.metric]})
                return True
            return False

        def should_stop():
            if time.monotonic() - stamped[0] > studies.HEARTBEAT_S:
                studies.stamp(trial)
                stamped[0] = time.monotonic()
            return self.stop_requested()

        output = os.path.join(self.folder, 'logs', self.run_name(trial.number, fold) + '.out')
        try:
            history = run_watched(command, folder, output, on_epoch, should_stop)
        except RunStopped:
            if self.stop_requested():
                raise SearchStopped() from None
            raise optuna.TrialPruned() from None
        best = RunSummary([self.metric], history).best_epochs().get(self.metric)
        if best is None:
            raise RunFailed(f'{folder}: no evaluated epoch with a {self.metric} whose embeddings did not collapse')
        return best[0]
