"""Carving a validation split out of the training split (by classes or by samples), reproducibly."""
import numpy as np

from datasets.image_folder import Split
from plumbing.errors import UserError


def relabel(samples, class_names):
    """A Split of `samples` with the labels that occur renumbered 0..C-1 in increasing order."""
    used = sorted({label for _, label in samples})
    new_label = {old: new for new, old in enumerate(used)}
    return Split([(path, new_label[label]) for path, label in samples], [class_names[old] for old in used])


def check_fraction(fraction):
    if not 0 < fraction < 1:
        raise UserError(f'--tv_split_perc {fraction} must lie strictly between 0 and 1 '
                        '(the fraction of the training data kept for training)')


def check_enough_classes(split, name):
    if len(split.class_names) < 2:
        raise UserError(f'the {name} split would have {len(split.class_names)} class(es), but at least 2 '
                        'are needed; change --tv_split_perc or use more training classes')
    return split


def split_by_classes(split, fraction):
    """(train, validation): the classes the authors keep for training, in label order, int(fraction * n)
    of them: the first of all classes, or, where the split has super-classes (SOP), the first of each."""
    check_fraction(fraction)
    groups = split.class_groups or [0] * len(split.class_names)
    kept = set()
    for group in sorted(set(groups)):
        members = [label for label, member_group in enumerate(groups) if member_group == group]
        kept.update(members[:int(fraction * len(members))])
    train = [sample for sample in split.samples if sample[1] in kept]
    validation = [sample for sample in split.samples if sample[1] not in kept]
    return (check_enough_classes(relabel(train, split.class_names), 'training'),
            check_enough_classes(relabel(validation, split.class_names), 'validation'))


def split_by_samples(split, fraction, seed):
    """(train, validation): within every class a random `fraction` of its images (rounded) stays for
    training and the rest goes to validation, leaving at least one image on each side (a class of
    a single image stays in training only)."""
    check_fraction(fraction)
    rng = np.random.default_rng(seed)
    labels = np.array([label for _, label in split.samples])
    train, validation = [], []
    for label in range(len(split.class_names)):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = max(1, min(len(members) - 1, round(fraction * len(members))))
        train.extend(split.samples[i] for i in sorted(members[:n_train]))
        validation.extend(split.samples[i] for i in sorted(members[n_train:]))
    return (check_enough_classes(relabel(train, split.class_names), 'training'),
            check_enough_classes(relabel(validation, split.class_names), 'validation'))


def class_folds(class_groups, n_folds, seed):
    """The fold (0 .. n_folds - 1) of each class: the classes shuffled with `seed` and dealt out in turn, within
    each group of `class_groups` (a group per class: SOP's super-classes) one after the other, so that every fold
    holds about as many classes of each group and the folds' sizes differ by one class at most."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(class_groups)
    fold_of = np.empty(len(groups), dtype=np.int64)
    dealt = 0
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        fold_of[members] = (dealt + np.arange(len(members))) % n_folds
        dealt += len(members)
    return fold_of


def split_by_fold(split, n_folds, fold, seed):
    """(train, validation): the training classes dealt into `n_folds` class-disjoint folds (class_folds), fold
    `fold` for validation and the others for training. Every class is in exactly one fold."""
    fold_of = class_folds(split.class_groups or [0] * len(split.class_names), n_folds, seed)
    if (fold_of == fold).sum() < 2:
        raise UserError(f'--cv_folds {n_folds} leaves fold {fold} {int((fold_of == fold).sum())} of the '
                        f'{len(split.class_names)} training classes, but a validation split needs at least 2; use '
                        f'fewer folds')
    train = [sample for sample in split.samples if fold_of[sample[1]] != fold]
    validation = [sample for sample in split.samples if fold_of[sample[1]] == fold]
    return (check_enough_classes(relabel(train, split.class_names), 'training'),
            check_enough_classes(relabel(validation, split.class_names), 'validation'))
