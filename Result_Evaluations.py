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
import sys

import parameters
from plumbing.errors import UserError, exit_code
from plumbing.lazy import lazy_module
from reporting.result_table import find_runs, write_result_tables

evaluation = lazy_module('evaluation')  # it imports torch, which --help needs not


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
    if opt.select_on and not evaluation.is_score(opt.select_on):
        raise UserError(f'--select_on {opt.select_on} measures the embedding space and has no best value: select on a '
                        f'score such as val_mAP@R or e_recall@1')
    at_epoch = 'selected' if opt.select_on else opt.at_epoch
    flag_defaults = vars(parameters.build_parser().parse_args([]))
    text = write_result_tables(find_runs(opt.runs), flag_defaults, opt.out, at_epoch=at_epoch, select_on=opt.select_on,
                               metric_names=opt.metrics)
    print(text + f'\nwrote results.md, results.csv, runs.csv and results.png to {opt.out}')
    return 0


if __name__ == '__main__':
    sys.exit(exit_code(main))
