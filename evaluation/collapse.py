"""Whether a network's embeddings have collapsed (a common failure of metric learning: too high a learning rate, a
bad loss setting): most of them zero or the same point, or all of them in one direction."""
import numpy as np

COLLAPSED_SHARE = 0.5
"""A split has collapsed where at least this share of its embeddings are zero or one and the same point."""
SPREAD_FLOOR = 1e-6
"""... or where the spread of its embedding directions, 1 - |mean of the unit embeddings|^2 (0 for a single
direction, near 1 for directions all over the sphere), is below this."""
ZERO_NORM = 1e-12
"""An embedding of at most this norm counts as zero (the evaluation cannot give it a direction)."""


def collapse_of(features):
    """None for healthy embeddings (N x D); else (zero rows, rows in the largest group of identical ones, spread)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1)
    nonzero = norms > ZERO_NORM
    units = features[nonzero] / norms[nonzero, None]
    n_zero = int((~nonzero).sum())
    largest_group = 0
    if len(units):
        rows = np.ascontiguousarray(units).view(np.dtype((np.void, units.dtype.itemsize * units.shape[1])))
        largest_group = int(np.unique(rows, return_counts=True)[1].max())
    spread = float(1 - np.sum(units.mean(axis=0, dtype=np.float64) ** 2)) if len(units) else 0.0
    if n_zero + largest_group >= COLLAPSED_SHARE * len(features) or spread < SPREAD_FLOOR:
        return n_zero, largest_group, spread
    return None


def collapse_warning(embedded, what='test'):
    """The one-line warning for collapsed embeddings {part: (features, labels)} (the parts together), or None."""
    features = np.concatenate([features for features, _ in embedded.values()])
    collapse = collapse_of(features)
    if collapse is None:
        return None
    n_zero, largest_group, spread = collapse
    return (f'the {what} embeddings have collapsed: of {len(features)}, {n_zero} are zero and {largest_group} are '
            f'one and the same point (direction spread {spread:.2g}): the network maps the images to (almost) one '
            f'point, so its metrics mean nothing; such an epoch is never kept as a best checkpoint (lower --lr or '
            f'check the loss settings)')
