"""The search's pruner: Optuna's median pruner applied fold by fold.

Epoch e of fold f is reported at step f * FOLD_STEPS + e. Optuna's MedianPruner compares a trial's best value over
all the steps it reported with the median of the finished trials' values at the current step, so a trial that did
well on an earlier fold would never be pruned on a later one. FoldPruner shows the pruner it wraps only the current
fold's steps of the trial: the trial's best value so far in this fold against the median of the finished trials at
the same fold and epoch.
"""
import copy

import optuna

FOLD_STEPS = 1_000_000
"""Epoch e of fold f is step f * FOLD_STEPS + e of the trial, so the pruner compares the same fold and epoch of every
trial, whatever number of epochs a trial trains."""


def fold_of(step):
    return step // FOLD_STEPS


class FoldPruner(optuna.pruners.BasePruner):
    """`pruner` (e.g. optuna.pruners.MedianPruner()) judging a trial on the steps of its current fold alone."""

    def __init__(self, pruner):
        self.pruner = pruner

    def prune(self, study, trial):
        step = trial.last_step
        if step is None:
            return False
        this_fold = copy.copy(trial)
        this_fold.intermediate_values = {reported: value for reported, value in trial.intermediate_values.items()
                                         if fold_of(reported) == fold_of(step)}
        return self.pruner.prune(study, this_fold)


def median_pruner():
    """Optuna's MedianPruner (its defaults: from the 6th finished trial on, from each fold's first epoch), fold by
    fold."""
    return FoldPruner(optuna.pruners.MedianPruner())
