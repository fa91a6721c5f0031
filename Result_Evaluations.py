"""Turn run folders into a paper's table: the seeds of each setting, mean ± sample std (ddof=1) per metric.

    python Result_Evaluations.py Training_Results/cub200                  # every run under a folder
    python Result_Evaluations.py 'Training_Results/cub200/CUB_MS*' --at_epoch last --out tables/cub
    python Result_Evaluations.py Training_Results/cub200 --select_on val_mAP@R   # the epochs chosen on validation

Runs are seeds of one setting when their configurations differ only in --seed (and --cv_fold: the K folds of a
cross-validation are one setting), in where/how they ran (--save_path, --kernels, --gpu, --source_path,
--log_online, --resume, ...) and in a seed suffix of --group (CUB_MS_s0, CUB_MS_seed1). Runs in progress, stopped,
or without a finished epoch are listed as skipped, never averaged.
Writes results.md, results.csv (one line per setting and metric), runs.csv (one line per run) and results.png.
"""
import argparse
import os
import sys

import parameters
from plumbing.errors import UserError, exit_code
from plumbing.files import atomic_write_text
from reporting.plots import plot_result_bars
from reporting.result_table import (csv_text, find_runs, group_runs, markdown_table, read_run, result_rows,
                                    runs_csv_text)


def build_parser():
    parser = argparse.ArgumentParser(prog='Result_Evaluations.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', metavar='RUNS', help='Run folders, folders holding runs, or globs.')
    parser.add_argument('--at_epoch', choices=['best', 'last'], default='best',
                        help='best: each metric\'s best epoch (as the original framework); last: the last epoch.')
    parser.add_argument('--select_on', default=None, metavar='METRIC',
                        help='Every metric at the epoch of each run\'s best METRIC instead, e.g. val_mAP@R: the test '
                             'metrics of the epoch chosen on validation data (runs with --use_tv_split or '
                             '--cv_folds).')
    parser.add_argument('--metrics', nargs='+', default=None, help='Metrics to show (default: all the runs have).')
    parser.add_argument('--out', default='Training_Results/tables', help='Folder for the table, CSVs and chart.')
    return parser


def main(argv=None):
    opt = build_parser().parse_args(argv)
    if opt.select_on and opt.at_epoch == 'last':
        raise UserError('--select_on chooses each run\'s epoch by a metric: drop --at_epoch last')
    at_epoch = 'selected' if opt.select_on else opt.at_epoch
    flag_defaults = vars(parameters.build_parser().parse_args([]))
    runs = [read_run(folder, flag_defaults, at_epoch, opt.select_on) for folder in find_runs(opt.runs)]
    finished = [run for run in runs if 'skipped' not in run]
    skipped = [run for run in runs if 'skipped' in run]
    if not finished:
        raise UserError(f'none of the {len(runs)} runs found has finished: nothing to average '
                        f'({skipped[0]["folder"]}: {skipped[0]["skipped"]})')
    grouped = group_runs(finished)
    rows, metric_names = result_rows(grouped, opt.metrics)
    unknown = [name for name in metric_names if not any(name in row['metrics'] for row in rows)]
    if unknown:
        raise UserError(f'no run has the metric {unknown[0]}; choose --metrics among those in the runs\' history')
    table = markdown_table(rows, metric_names, at_epoch, opt.select_on)
    skipped_lines = ''.join(f'- skipped {run["folder"]}: {run["skipped"]}\n' for run in skipped)
    print(table + (f'\n{skipped_lines}' if skipped_lines else ''), end='')

    try:
        os.makedirs(opt.out, exist_ok=True)
        atomic_write_text(os.path.join(opt.out, 'results.md'), table + (f'\n{skipped_lines}' if skipped_lines else ''))
        atomic_write_text(os.path.join(opt.out, 'results.csv'), csv_text(rows, metric_names))
        atomic_write_text(os.path.join(opt.out, 'runs.csv'), runs_csv_text(grouped, metric_names))
        plot_result_bars(rows, metric_names, os.path.join(opt.out, 'results.png'),
                         f'mean ± sample std over seeds ({opt.select_on or opt.at_epoch} epoch)')
    except OSError as error:
        raise UserError(f'cannot write to --out {opt.out} ({error.strerror}); pass a writable folder') from None
    print(f'\nwrote results.md, results.csv, runs.csv and results.png to {opt.out}')
    return 0


if __name__ == '__main__':
    sys.exit(exit_code(main))
