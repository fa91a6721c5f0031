"""What a search reports: a line per finished trial, the trial table (trials.csv), the best setting (best.json) and
Optuna's plots of the optimisation history and the parameter importances, in the study folder."""
import csv
import io
import os
import warnings

from plumbing.files import atomic_write_json, atomic_write_text
from plumbing.lazy import lazy_module
from reporting.plots import save_figure, use_agg

optuna = lazy_module('optuna')
optuna_plots = lazy_module('optuna.visualization.matplotlib', before_import=use_agg)

STATES = {'COMPLETE': 'finished', 'PRUNED': 'pruned', 'FAIL': 'failed', 'RUNNING': 'running', 'WAITING': 'queued'}


def completed(study):
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def parameters_text(params):
    return ' '.join(f'{name} {value:.4g}' if isinstance(value, float) else f'{name} {value}'
                    for name, value in params.items())


def trial_line(study, trial, metric):
    """'trial 3 finished: val_mAP@R 0.4123 (best 0.4301, trial 1) | kd_lambda 57.3 ...' and the like."""
    state = trial.state.name
    best = max(completed(study), key=lambda done: done.value, default=None)
    best_text = f'best {best.value:.4f}, trial {best.number}' if best is not None else 'no trial finished yet'
    if state == 'COMPLETE':
        head = f'trial {trial.number} finished: {metric} {trial.value:.4f} ({best_text})'
    elif state == 'PRUNED':
        at = trial.user_attrs.get('pruned_at', {})
        fold = f' of fold {at["fold"]}' if at.get('fold') is not None else ''
        head = (f'trial {trial.number} pruned after epoch {at.get("epoch")}{fold}: {metric} '
                f'{at.get("value", float("nan")):.4f} ({best_text})')
    else:
        head = f'trial {trial.number} {STATES.get(state, state.lower())}: {trial.user_attrs.get("error", "")}'
    return f'{head} | {parameters_text(trial.params)}'


def trials_csv(study):
    """One row per trial: number, state, value, each parameter, the fold values, the run folders, times."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['number', 'state', 'value', *names, 'fold_values', 'run_folders', 'started', 'finished',
                     'retry_of'])
    for trial in trials:
        writer.writerow([trial.number, STATES.get(trial.state.name, trial.state.name), trial.value,
                         *(trial.params.get(name, '') for name in names),
                         ' '.join(map(repr, trial.user_attrs.get('fold_values', []))),
                         ' '.join(trial.user_attrs.get('run_folders', [])),
                         trial.datetime_start.isoformat(timespec='seconds') if trial.datetime_start else '',
                         trial.datetime_complete.isoformat(timespec='seconds') if trial.datetime_complete else '',
                         trial.user_attrs.get('retry_of', '')])
    return buffer.getvalue()


def write_report(study, folder, metric):
    """trials.csv, best.json and the plots in `folder`; returns the best trial (None before any finished) and the
    names of the plots that could not be drawn, with why."""
    atomic_write_text(os.path.join(folder, 'trials.csv'), trials_csv(study))
    done = completed(study)
    best = max(done, key=lambda trial: trial.value, default=None)
    if best is not None:
        atomic_write_json(os.path.join(folder, 'best.json'),
                          {'study': study.study_name, 'objective': metric, 'value': best.value, 'trial': best.number,
                           'params': best.params, 'run_folders': best.user_attrs.get('run_folders', []),
                           'finished_trials': len(done), 'trials': len(study.get_trials(deepcopy=False))})
    return best, write_plots(study, folder, len(done))


def write_plots(study, folder, n_completed):
    """optimization_history.png and param_importances.png (importances need two finished trials)."""
    skipped = {}
    plots = {'optimization_history': optuna_plots.plot_optimization_history}
    if n_completed >= 2:
        plots['param_importances'] = optuna_plots.plot_param_importances
    else:
        skipped['param_importances'] = 'needs two finished trials'
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # Optuna's matplotlib plots are marked experimental
                axes = plot(study)
        except (ValueError, RuntimeError) as error:  # e.g. importances of parameters that never varied
            skipped[name] = str(error).splitlines()[0] if str(error) else type(error).__name__
            continue
        figure = axes.figure if hasattr(axes, 'figure') else axes[0].figure
        figure.tight_layout()
        save_figure(figure, os.path.join(folder, f'{name}.png'))
    return skipped
