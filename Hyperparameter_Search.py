"""Search hyper-parameters with Optuna on validation data only; the test classes are never looked at.

    python Hyperparameter_Search.py --dataset digits --space kd_lambda=log:10:200 diffusion_w=0.5:0.999 \
        --n_trials 4 --n_epochs 3 --PSD --OBDP
    python Hyperparameter_Search.py ... --cv_folds 4            # each trial: 4 class-disjoint folds, their mean
    python Hyperparameter_Search.py ... --storage postgresql://user@host/db --study cub_obdsd   # many machines
    python Hyperparameter_Search.py ... --report --final_runs 0 1 2   # the best setting, retrained and tested

Every main.py flag given here is the base run; --space names the flags to search (FLAG=low:high, FLAG=log:low:high,
FLAG=choice:a,b). Each trial trains with a class-disjoint validation split (--use_tv_split, or --cv_folds K: K runs,
one per held-out fold) without evaluating the test split, reports the validation metric of every epoch to Optuna's
median pruner (fold by fold), and its value is the best validation value (the mean over the folds). Rerunning the
command continues the study; several processes (one per machine, or SLURM array tasks) may work on one study at once.
"""
import json
import os
import shlex
import signal
import sys

import datasets
import parameters
from plumbing.errors import UserError, exit_code
from plumbing.lazy import lazy_module
from plumbing.stop_signals import CaughtSignals
from reporting.result_table import write_result_tables
from tuning import report
from tuning.objective import MAIN, SearchStopped, Trials
from tuning.space import flag_actions, parse_space, without_flags
from tuning.study import fail_stale_trials, open_study, storage_of, study_folder
from tuning.trial_run import RunFailed, RunStopped, read_history, run_watched

evaluation = lazy_module('evaluation')  # imports torch: a search, not --help, needs it
optuna = lazy_module('optuna')
pruning = lazy_module('tuning.pruning')  # its FoldPruner subclasses an Optuna class: importing it imports Optuna

PRUNERS = {'median': lambda: pruning.median_pruner(), 'none': lambda: optuna.pruners.NopPruner()}
"""--pruner choices: each makes the pruner (Optuna is imported once a search starts, not for --help)."""


def build_parser():
    parser = parameters.OneLineArgumentParser(
        prog='Hyperparameter_Search.py', allow_abbrev=False,
        description='Search hyper-parameters of main.py with Optuna on validation data; every other flag is main.py\'s '
                    '(the base run).')
    parser.add_argument('--space', nargs='+', default=[], metavar='FLAG=SPEC',
                        help='The flags to search: FLAG=low:high (uniform), FLAG=log:low:high (log-uniform), '
                             'FLAG=choice:a,b,c; integers for integer flags.')
    parser.add_argument('--space_file', default=None, type=os.path.expanduser,
                        help='A JSON object {"FLAG": "SPEC", ...}, added to --space.')
    parser.add_argument('--n_trials', type=int, default=10, help='Trials this process runs (default 10).')
    parser.add_argument('--study', default=None, help='Study name (default: <dataset>_search).')
    parser.add_argument('--storage', default=None,
                        help='An Optuna storage URL (postgresql://..., mysql://..., sqlite:///...); default: a journal '
                             'file in the study folder, which processes sharing a file system can share.')
    parser.add_argument('--objective', default='mAP@R',
                        help='The validation metric to maximise (one of --evaluation_metrics; default mAP@R).')
    parser.add_argument('--pruner', default='median', choices=list(PRUNERS),
                        help='Stop trials whose best validation metric so far in a fold is below the median of the '
                             'finished trials at the same fold and epoch (Optuna\'s MedianPruner, fold by fold: from '
                             'the 6th finished trial on), or never.')
    parser.add_argument('--launcher', default=None,
                        help='Start each run with this command before main.py, e.g. "torchrun --nproc_per_node 4" '
                             '(default: this Python).')
    parser.add_argument('--with_test_metrics', action='store_true',
                        help='Also evaluate the test split in every trial (never read by the search).')
    parser.add_argument('--stale_after', type=float, default=10, metavar='MINUTES',
                        help='A running trial whose worker gave no sign of life for this long is failed and queued '
                             'again (a worker of this machine that no longer exists: at once).')
    parser.add_argument('--report', action='store_true', help='Write the report of the study, run no trial.')
    parser.add_argument('--final_runs', nargs='+', type=int, default=None, metavar='SEED',
                        help='Then retrain the best setting on all training classes with these seeds, evaluating the '
                             'test split once, after the last epoch: the row a paper reports.')
    return parser


def space_texts(opt):
    """--space and the entries of --space_file."""
    texts = list(opt.space)
    if opt.space_file:
        try:
            with open(opt.space_file, encoding='utf-8') as stream:
                entries = json.load(stream)
        except (OSError, ValueError) as error:
            raise UserError(f'--space_file {opt.space_file}: cannot read it as JSON ({error})') from None
        if not isinstance(entries, dict) or not all(isinstance(spec, str) for spec in entries.values()):
            raise UserError(f'--space_file {opt.space_file}: expected an object {{"FLAG": "SPEC", ...}}')
        texts += [f'{flag}={spec}' for flag, spec in entries.items()]
    return texts


def split_folds(base):
    """(base without --cv_folds K, K or None); the search runs every fold itself."""
    base = list(base)
    if any(argument.split('=')[0] == '--cv_fold' for argument in base):
        raise UserError('the search runs every fold of --cv_folds K itself: drop --cv_fold')
    for position, argument in enumerate(base):
        name, _, value = argument.partition('=')
        if name == '--cv_folds':
            if not value:
                if position + 1 >= len(base):
                    raise UserError('--cv_folds needs the number of folds K')
                value = base.pop(position + 1)
            base.pop(position)
            try:
                return base, int(value)
            except ValueError:
                raise UserError(f'--cv_folds {value}: give the number of folds, an integer') from None
    return base, None


def checked_setting(opt, base, folds):
    """(the base run's options, the space's Dimensions, the objective val_ metric, the base's --save_path) after
    checking every flag, the dataset path, the validation split of every fold and both ends of every range, before
    anything trains."""
    if opt.n_trials < 0:
        raise UserError(f'--n_trials must be 0 or more, got {opt.n_trials}')
    parser = parameters.build_parser(prog='main.py (the base run)')
    given = parameters.explicit_flags(parser, base)
    dimensions = parse_space(space_texts(opt), flag_actions(parser), given)
    metric = 'val_' + opt.objective.removeprefix('val_')
    evaluated = parameters.parse_args(base, parser).evaluation_metrics
    if metric.removeprefix('val_') not in evaluated:
        raise UserError(f'--objective {opt.objective} is not among --evaluation_metrics {" ".join(evaluated)}')
    if not evaluation.is_score(metric):
        raise UserError(f'--objective {opt.objective} measures the embedding space and has no best value: search on a '
                        f'score such as e_recall@1, nmi or mAP@R')

    def probe(fold, dimension=None, value=None):
        """The options of a trial run of `fold` with `dimension` at `value` (the base's value of every other)."""
        searched = [dimension] if dimension else []
        trial = Trials(study_name='check', base=base, dimensions=searched, metric=metric, folds=folds, folder='.',
                       dataset='', with_test=opt.with_test_metrics)
        return parameters.parse_args(trial.arguments({dimension.flag: value} if dimension else {}, 0, fold), parser)

    folds_checked = [None] if folds is None else list(range(folds))
    base_opt = probe(folds_checked[0])
    for dimension in dimensions:
        for value in dimension.extremes():
            try:
                probe(folds_checked[0], dimension, value)
            except UserError as error:
                raise UserError(f'--space {dimension.flag}: main.py refuses its value {value}: {error}') from None
        for needed in parameters.ONLY_WITH.get(dimension.flag, ()):
            if not getattr(base_opt, needed):
                print(f'warning: --space {dimension.flag} changes nothing without --{needed}', file=sys.stderr)
    _, splits, _ = datasets.load_splits(base_opt)  # lists the files, opens no image
    for fold in folds_checked:
        datasets.split_validation(probe(fold), splits['training'])
    save_path = parser.parse_known_args(base)[0].save_path
    return base_opt, dimensions, metric, save_path


class StopRequest(CaughtSignals):
    """SIGINT / SIGTERM (a cluster's pre-emption) stop the search after the running trial's run saved itself
    (while in a `with` block)."""

    def announce(self):
        print(f'{self.received} received: stopping the running trial; its parameters are queued again', flush=True)

    def __call__(self):
        return self.received is not None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt, base = build_parser().parse_known_args(argv)
    base, folds = split_folds(base)
    base_opt, dimensions, metric, save_path = checked_setting(opt, base, folds)
    study_name = opt.study or f'{base_opt.dataset}_search'
    folder = study_folder(save_path, study_name)
    with StopRequest() as stop:
        trials = Trials(study_name=study_name, base=base, dimensions=dimensions, metric=metric, folds=folds,
                        folder=folder, dataset=base_opt.dataset,
                        launcher=shlex.split(opt.launcher) if opt.launcher else None,
                        with_test=opt.with_test_metrics, stale_after_s=60 * opt.stale_after, stop_requested=stop)
        if opt.final_runs:
            check_final_runs(trials, opt.final_runs, base_opt.n_epochs)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise UserError(f'cannot create the study folder {folder} ({error.strerror}); pass a writable '
                            f'--save_path') from None
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line of our own per trial instead
        trials.storage = storage_of(opt.storage, folder)
        setting = {'base': base, 'space': space_texts(opt), 'objective': metric, 'folds': folds,
                   'with_test_metrics': opt.with_test_metrics}
        study = open_study(study_name, trials.storage, setting, PRUNERS[opt.pruner]())
        protocol = f'cross-validation over {folds} folds' if folds else 'the --use_tv_split validation split'
        print(f'study {study_name} ({len(study.trials)} trials so far) in {folder}; objective {metric} on '
              f'{protocol}', flush=True)
        if not opt.report and opt.n_trials:
            for number in fail_stale_trials(study, trials.storage, trials.stale_after_s):
                print(f'trial {number} was left running by a worker that stopped: failed, its parameters queued '
                      f'again', flush=True)
            try:
                study.optimize(trials, n_trials=opt.n_trials, catch=(RunFailed,),
                               callbacks=[lambda done, trial: print(report.trial_line(done, trial, metric),
                                                                    flush=True)])
            except SearchStopped:
                number, params = trials.current
                study.enqueue_trial(params, user_attrs={'retry_of': number})
                best, skipped = report.write_report(study, folder, metric)
                print_report(study, folder, best, skipped, metric)
                return 128 + signal.Signals[stop.received].value
        best, skipped = report.write_report(study, folder, metric)
        print_report(study, folder, best, skipped, metric)
        if opt.final_runs and best is not None:
            return final_runs(trials, best, opt.final_runs, base_opt, folder)
    return 0


def print_report(study, folder, best, skipped, metric):
    counts = {}
    for trial in study.get_trials(deepcopy=False):
        counts[report.STATES.get(trial.state.name, trial.state.name)] = counts.get(
            report.STATES.get(trial.state.name, trial.state.name), 0) + 1
    print(f'{len(study.trials)} trials: ' + ', '.join(f'{count} {state}' for state, count in counts.items()))
    if best is None:
        print('no trial has finished yet: no best setting')
    else:
        print(f'best: trial {best.number}, {metric} {best.value:.4f} | {report.parameters_text(best.params)}')
    drawn = sorted({'optimization_history', 'param_importances'} - set(skipped))
    print(f'wrote trials.csv{", best.json" if best else ""}{"".join(", " + name + ".png" for name in drawn)} to '
          f'{folder}' + ''.join(f'; no {name}.png: {why}' for name, why in skipped.items()), flush=True)


VALIDATION_FLAGS = ('use_tv_split', 'tv_split_perc', 'tv_split_by_samples', 'cv_folds', 'cv_fold', 'no_test_metrics')
"""The base run's flags of the search's validation protocol, which a final run (all training classes) leaves out."""


def final_run_arguments(trials, params, seed, n_epochs):
    """main.py's arguments of the final run of `params` with `seed`: the base run without its validation protocol
    (every training class trains), the test split evaluated once, after epoch `n_epochs`."""
    base = without_flags(trials.base, VALIDATION_FLAGS, parameters.build_parser())
    sampled = [argument for dimension in trials.dimensions for argument in dimension.arguments(params[dimension.flag])]
    group = f'{trials.study_name}_final'
    return [*base, *sampled, '--seed', str(seed), '--evaluate_every', str(n_epochs), '--save_path', trials.folder,
            '--group', group, '--savename', f'{group}_s{seed}']


def check_final_runs(trials, seeds, n_epochs):
    """A one-line error, before anything trains, where main.py would refuse the final runs' arguments (e.g. a
    --storage_metrics val_... of the base run, which has no validation split then)."""
    probe = {dimension.flag: dimension.extremes()[0] for dimension in trials.dimensions}
    try:
        parameters.parse_args(final_run_arguments(trials, probe, seeds[0], n_epochs))
    except UserError as error:
        raise UserError(f'--final_runs: main.py refuses the final runs\' flags (the base run without its validation '
                        f'split): {error}') from None


def final_runs(trials, best, seeds, base_opt, folder):
    """Train the best setting on all training classes (no validation split) with each seed, the test split
    evaluated once after the last epoch; then their table (Result_Evaluations.py, last epoch)."""
    n_epochs = best.params.get('n_epochs', base_opt.n_epochs)
    run_folders = []
    for seed in seeds:
        arguments = final_run_arguments(trials, best.params, seed, n_epochs)
        name = arguments[-1]
        run_folder = os.path.join(folder, base_opt.dataset, name)
        run_folders.append(run_folder)
        if len(read_history(run_folder)) == n_epochs:
            print(f'final run seed {seed}: done already ({run_folder})', flush=True)
            continue
        if os.path.exists(run_folder):
            raise UserError(f'{run_folder} holds an unfinished final run; resume it with python main.py --resume '
                            f'{run_folder}, or remove it')
        command = [*trials.launcher, MAIN, *arguments]
        print(f'final run seed {seed}: {run_folder}', flush=True)
        os.makedirs(os.path.join(folder, 'logs'), exist_ok=True)
        try:
            run_watched(command, run_folder, os.path.join(folder, 'logs', name + '.out'), lambda entry: False,
                        trials.stop_requested)
        except RunFailed as error:
            raise UserError(f'final run seed {seed}: {error}') from None
        except RunStopped:
            print(f'stopped: continue the final run with python main.py --resume {run_folder}, then rerun this '
                  f'command', flush=True)
            return 128 + signal.SIGTERM
    flag_defaults = vars(parameters.build_parser().parse_args([]))
    print(write_result_tables(run_folders, flag_defaults, os.path.join(folder, 'final'), at_epoch='last'), end='',
          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(exit_code(main))
