"""Batches of `samples_per_class` images from each of `batch_size // samples_per_class` class draws."""
import numpy as np

from plumbing.errors import UserError

SEED_LIMIT = 2 ** 63  # augmentation seeds are drawn from [0, SEED_LIMIT)
DRAWS = {
    'class_random': 'class_random (each class draw and each image WITH replacement, as the authors\' sampler)',
    'class_distinct': 'class_distinct (distinct classes, distinct images of each class)',
}
"""--data_sampler choices and what each does."""


def check_settings(n_samples, n_classes, bs, spc, seed, replicas, rank, draw):
    """UserError unless batches of `bs` images, `spc` per class, split over `replicas` processes, can
    be drawn from `n_samples` images of `n_classes` classes."""
    if draw not in DRAWS:
        raise UserError(f'unknown --data_sampler {draw!r}; choose one of {", ".join(DRAWS)}')
    if seed < 0:
        raise UserError(f'--seed {seed} must be non-negative')
    if spc < 1 or bs < 1:
        raise UserError(f'--bs {bs} and --samples_per_class {spc} must be positive')
    if bs % spc:
        raise UserError(f'--bs {bs} is not a multiple of --samples_per_class {spc}; '
                        'a batch holds whole groups of images per class')
    if bs % replicas or (bs // replicas) % spc:
        raise UserError(f'--bs {bs} split over {replicas} processes gives slices that are not a multiple '
                        f'of --samples_per_class {spc}; choose --bs divisible by {replicas * spc}')
    if not 0 <= rank < replicas:
        raise UserError(f'rank {rank} is outside 0..{replicas - 1}')
    if draw == 'class_distinct' and bs // spc > n_classes:
        raise UserError(f'--bs {bs} / --samples_per_class {spc} = {bs // spc} classes per batch, '
                        f'but the training split has only {n_classes} classes; '
                        'lower --bs, raise --samples_per_class, or use --data_sampler class_random')
    if bs > n_samples:
        raise UserError(f'--bs {bs} is larger than the training split ({n_samples} images); lower --bs')


class ClassBalancedBatchSampler:
    """Batch sampler for `DataLoader(batch_sampler=...)` yielding lists of `(index, augmentation_seed)`.

    Every global batch is `batch_size // samples_per_class` class draws of `samples_per_class` images.
    With `draw='class_random'` (the authors' default) each draw picks a class uniformly from all
    classes and each of its images uniformly from the class, both WITH replacement: a class may come
    twice in a batch and an image twice in a draw. With `draw='class_distinct'` the classes of a
    batch are distinct and so are the images of a draw (drawn with replacement only from classes that
    have fewer than `samples_per_class`). Batch b of epoch e depends on (seed, e, b) alone, so runs
    repeat exactly and `set_epoch(e, start_batch)` resumes in the middle of an epoch. With
    `num_replicas` > 1 every rank draws the same global batch and yields its own contiguous slice of
    whole draws. Call `set_epoch` before each epoch, as with DistributedSampler.
    """

    def __init__(self, labels, batch_size, samples_per_class, seed, num_replicas=1, rank=0, draw='class_random'):
        labels = np.asarray(labels)
        self.indices_of_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
        check_settings(len(labels), len(self.indices_of_class), batch_size, samples_per_class, seed,
                       num_replicas, rank, draw)
        self.batch_size = batch_size
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.draw = draw
        self.classes_per_batch = batch_size // samples_per_class
        self.batches_per_epoch = len(labels) // batch_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch, start_batch=0):
        """Draw the batches of `epoch`, skipping its first `start_batch` (to resume mid-epoch)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f'start_batch {start_batch} is outside 0..{self.batches_per_epoch}')
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self):
        """Batches this iteration yields: the epoch's `batches_per_epoch` minus the skipped ones."""
        return self.batches_per_epoch - self.start_batch

    def global_batch(self, epoch, batch):
        """The full batch `batch` of `epoch` (all replicas) as a list of (index, augmentation_seed)."""
        rng = np.random.default_rng([self.seed, epoch, batch])
        distinct = self.draw == 'class_distinct'
        classes = rng.choice(len(self.indices_of_class), self.classes_per_batch, replace=not distinct)
        indices = []
        for class_position in classes:
            members = self.indices_of_class[class_position]
            replace = not distinct or len(members) < self.samples_per_class
            indices.extend(rng.choice(members, self.samples_per_class, replace=replace).tolist())
        seeds = rng.integers(0, SEED_LIMIT, size=len(indices)).tolist()
        return list(zip(indices, seeds))

    def __iter__(self):
        slice_size = self.batch_size // self.num_replicas
        start = self.rank * slice_size
        for batch in range(self.start_batch, self.batches_per_epoch):
            yield self.global_batch(self.epoch, batch)[start:start + slice_size]
