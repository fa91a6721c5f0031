"""From run folders to a paper's table: find runs, group the seeds of one setting, mean ± sample std per metric."""
import csv
import glob
import io
import json
import math
import os
import re
import statistics

from plumbing.errors import UserError
from plumbing.files import atomic_write_text
from plumbing.lazy import lazy_module
from reporting.plots import plot_result_bars
from run_folder.folder import CONFIG_FILE
from run_folder.saved_flags import with_missing_flags
from run_folder.summary import RunSummary

evaluation = lazy_module('evaluation')  # it imports torch, which tables of finished runs need not

SUMMARY_FILE = 'summary.json'
# Flags that say where a run ran, how it logged or how it was started, not what it computed: seeds (and the
# cross-validation folds) of one setting may differ in them. --group is compared without its seed suffix; savename
# names the folder only.
NOT_A_SETTING = {'seed', 'cv_fold', 'save_path', 'savename', 'group', 'kernels', 'gpu', 'source_path', 'log_online',
                 'project', 'resume', 'dry_run', 'evaluate_on_gpu', 'evaluation_metrics', 'storage_metrics',
                 'applied_defaults', 'dist_backend', 'dist_timeout', 'save_embeddings'}
SEED_SUFFIX = re.compile(r'[_\-.](s|seed)[_\-]?\d+$', re.IGNORECASE)


def find_runs(patterns):
    """Run folders (holding summary.json or config.json) named by `patterns`: run folders, folders above them,
    their summary.json files, or globs of any of these. Sorted, without duplicates."""
    runs = set()
    for pattern in patterns:
        matches = glob.glob(os.path.expanduser(pattern)) if glob.has_magic(pattern) else [os.path.expanduser(pattern)]
        for path in matches:
            if os.path.isfile(path) and os.path.basename(path) in (SUMMARY_FILE, CONFIG_FILE):
                path = os.path.dirname(path)
            if not os.path.isdir(path):
                raise UserError(f'{path}: no such run folder; give run folders, folders holding runs, or globs')
            runs.update(folder for folder, _, files in os.walk(path)
                        if SUMMARY_FILE in files or CONFIG_FILE in files)
    if not runs:
        raise UserError(f'no runs (folders with {SUMMARY_FILE} or {CONFIG_FILE}) in {" ".join(patterns)}; '
                        f'give the --save_path of your runs or their folders')
    return sorted(runs)


def read_json(path):
    try:
        with open(path, encoding='utf-8') as stream:
            record = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f'cannot read {path} ({error}); repair it or leave its run out') from None
    if not isinstance(record, dict):
        raise UserError(f'{path} is not a run summary (a JSON object); leave its run out')
    return record


def read_run(folder, flag_defaults, at_epoch='best', select_on=None):
    """{'folder', 'config', 'values': {metric: value}} of a finished run, or {'folder', 'skipped': why}.

    The config of a run saved before a flag existed gets the value that run had (as when it is resumed), else the
    flag's value in `flag_defaults` (main.py's flags and their defaults), so it is a seed of the same setting as a
    new run that computes the same.

    at_epoch 'best': each metric's own best epoch (the highest value, as the original framework's tables; the
    embedding-space measures, which have no best, are left out); 'last': the last epoch's values; 'selected': every
    metric at the epoch of the best `select_on` (e.g. val_mAP@R: model selection on validation data). Epochs whose
    embeddings collapsed are never a best one.
    """
    summary_path = os.path.join(folder, SUMMARY_FILE)
    if not os.path.exists(summary_path):
        return {'folder': folder, 'skipped': 'no finished epoch (config.json only)'}
    summary = read_json(summary_path)
    config, history = summary.get('config'), summary.get('history')
    if not isinstance(config, dict) or not isinstance(history, list):
        raise UserError(f'{summary_path} has no config or history; it is not a summary of this repository\'s runs')
    if not history:
        return {'folder': folder, 'skipped': 'no finished epoch'}
    n_epochs = config.get('n_epochs')
    if isinstance(n_epochs, int) and len(history) < n_epochs:
        return {'folder': folder, 'skipped': f'in progress or stopped: {len(history)} of {n_epochs} epochs'}
    config = with_missing_flags(config, flag_defaults)
    metric_names = [name for name in history[-1] if is_metric(name, config) and not isinstance(history[-1][name], list)]
    if at_epoch == 'best':  # a measure of the embedding space (dists@..., rho_spectrum@M) has no best epoch
        metric_names = [name for name in metric_names if evaluation.is_score(name)]
    if at_epoch == 'last':
        values = {name: history[-1][name] for name in metric_names}
    elif at_epoch == 'selected':
        chosen = RunSummary([select_on], history).best_epochs().get(select_on)
        if chosen is None:
            return {'folder': folder, 'skipped': f'no {select_on} to select an epoch on'}
        entry = next(entry for entry in history if entry['epoch'] == chosen[1])
        values = {name: entry[name] for name in metric_names if name in entry}
    else:
        values = {name: value for name, (value, _) in RunSummary(metric_names, history).best_epochs().items()}
    return {'folder': folder, 'config': config, 'values': values}


def is_metric(name, config):
    """Whether a history column is a test or validation metric of the run."""
    return name.removeprefix('val_') in (config.get('evaluation_metrics') or [])


def setting_of(config):
    """What must agree for two runs to be seeds of one setting."""
    group = SEED_SUFFIX.sub('', config.get('group') or '')
    return json.dumps({'group': group, **{k: v for k, v in config.items() if k not in NOT_A_SETTING}}, sort_keys=True)


def group_runs(runs):
    """[(setting name, [runs])] sorted by name; names from --group without its seed suffix,
    made unique (or, without a group, built) from the flags in which the settings differ."""
    groups = {}
    for run in runs:
        groups.setdefault(setting_of(run['config']), []).append(run)
    settings = [json.loads(key) for key in groups]
    names = []
    for setting in settings:
        same_name = [other for other in settings if other['group'] == setting['group']]
        differing = [key for key in sorted(setting) if any(other.get(key) != setting.get(key) for other in same_name)]
        flags = ' '.join(f'{key}={setting.get(key)}' for key in differing)
        names.append(' '.join(part for part in (setting['group'], flags) if part)
                     or f'{setting.get("dataset")} {setting.get("loss")}')
    return sorted(zip(names, groups.values()), key=lambda pair: pair[0])


def aggregate(values):
    """{'n', 'mean', 'std', 'values'}; std is the sample standard deviation (ddof=1), nan for one value."""
    return {'n': len(values), 'mean': statistics.fmean(values),
            'std': statistics.stdev(values) if len(values) > 1 else math.nan, 'values': list(values)}


def result_rows(grouped, metric_names=None):
    """Rows [{'setting', 'runs', 'metrics': {metric: aggregate}}] and the metric names shown (in first-seen order
    unless `metric_names` chooses)."""
    if metric_names is None:
        metric_names = []
        for _, runs in grouped:
            for run in runs:
                metric_names += [name for name in run['values'] if name not in metric_names]
    rows = []
    for name, runs in grouped:
        metrics = {metric: aggregate([run['values'][metric] for run in runs if metric in run['values']])
                   for metric in metric_names if any(metric in run['values'] for run in runs)}
        rows.append({'setting': name, 'runs': [run['folder'] for run in runs],
                     'seeds': [run['config'].get('seed') for run in runs],
                     'folds': [run['config'].get('cv_fold') for run in runs], 'metrics': metrics})
    return rows, list(metric_names)


def cell(stats, n_seeds):
    """'89.84 ± 0.52' in percent; the count when it is not every seed of the row."""
    if stats is None:
        return '–'
    text = f'{100 * stats["mean"]:.2f}' + (f' ± {100 * stats["std"]:.2f}' if stats['n'] > 1 else '')
    return text + (f' (n={stats["n"]})' if stats['n'] != n_seeds else '')


def markdown_table(rows, metric_names, at_epoch, select_on=None):
    """The table as Markdown: one row per setting, mean ± sample std (ddof=1) over its runs (seeds, and
    cross-validation folds where there are), in percent."""
    which = {'best': 'best epoch of each metric', 'last': 'last epoch'}.get(at_epoch)
    if at_epoch == 'selected':
        data = 'validation' if select_on.startswith('val_') else 'test'
        which = f'epoch of each run\'s best {select_on} (selected on {data} data)'
    with_folds = any(fold is not None for row in rows for fold in row['folds'])
    counts = 'seeds | folds' if with_folds else 'seeds'
    lines = [f'| setting | {counts} | {" | ".join(metric_names)} |',
             '|---|---|' + ('---|' if with_folds else '') + '---|' * len(metric_names)]
    for row in rows:
        cells = [cell(row['metrics'].get(name), len(row['runs'])) for name in metric_names]
        count = (f'{len(set(row["seeds"]))} | {len(set(row["folds"]))}' if with_folds else str(len(row['runs'])))
        lines.append(f'| {row["setting"]} | {count} | {" | ".join(cells)} |')
    over = 'runs (seeds x folds)' if with_folds else 'seeds'
    note = (f'Values in %: mean ± sample standard deviation (ddof=1) over {over}, at the {which}; '
            f'(n=K) where only K {over} have that metric.')
    return '\n'.join(lines) + '\n\n' + note + '\n'


def csv_text(rows, metric_names):
    """One line per setting and metric: n, mean, sample std (ddof=1), min, max, the values (fractions, not %)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['setting', 'metric', 'n', 'mean', 'std_ddof1', 'min', 'max', 'values'])
    for row in rows:
        for name in metric_names:
            stats = row['metrics'].get(name)
            if stats is not None:
                std = '' if math.isnan(stats['std']) else repr(stats['std'])
                writer.writerow([row['setting'], name, stats['n'], repr(stats['mean']), std, min(stats['values']),
                                 max(stats['values']), ' '.join(map(repr, stats['values']))])
    return buffer.getvalue()


def runs_csv_text(grouped, metric_names):
    """One line per run that was averaged: its setting, seed, folder and values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['setting', 'seed', 'cv_fold', 'folder', *metric_names])
    for name, runs in grouped:
        for run in runs:
            writer.writerow([name, run['config'].get('seed'), run['config'].get('cv_fold'), run['folder'],
                             *(run['values'].get(metric, '') for metric in metric_names)])
    return buffer.getvalue()


def write_result_tables(folders, flag_defaults, out, at_epoch='best', select_on=None, metric_names=None):
    """Read the runs in `folders` (see read_run), group the seeds (and folds) of each setting, and write results.md,
    results.csv, runs.csv and results.png to `out`; returns the Markdown table with the runs skipped."""
    runs = [read_run(folder, flag_defaults, at_epoch, select_on) for folder in folders]
    finished = [run for run in runs if 'skipped' not in run]
    skipped = [run for run in runs if 'skipped' in run]
    if not finished:
        raise UserError(f'none of the {len(runs)} runs found has finished: nothing to average '
                        f'({skipped[0]["folder"]}: {skipped[0]["skipped"]})')
    grouped = group_runs(finished)
    rows, metric_names = result_rows(grouped, metric_names)
    unknown = [name for name in metric_names if not any(name in row['metrics'] for row in rows)]
    if unknown:
        raise UserError(f'no run has the metric {unknown[0]}; choose --metrics among those in the runs\' history')
    skipped_lines = ''.join(f'- skipped {run["folder"]}: {run["skipped"]}\n' for run in skipped)
    text = markdown_table(rows, metric_names, at_epoch, select_on) + (f'\n{skipped_lines}' if skipped_lines else '')
    try:
        os.makedirs(out, exist_ok=True)
        atomic_write_text(os.path.join(out, 'results.md'), text)
        atomic_write_text(os.path.join(out, 'results.csv'), csv_text(rows, metric_names))
        atomic_write_text(os.path.join(out, 'runs.csv'), runs_csv_text(grouped, metric_names))
        plot_result_bars(rows, metric_names, os.path.join(out, 'results.png'),
                         f'mean ± sample std over seeds ({select_on or at_epoch} epoch)')
    except OSError as error:
        raise UserError(f'cannot write to --out {out} ({error.strerror}); pass a writable folder') from None
    return text
