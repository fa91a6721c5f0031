"""Draws the miners share: a uniform pick per row of a mask, and distance-weighted negatives (Wu et al., ICCV 2017)."""
import math

import torch

# Keeps log(1 - d²/4) finite where two embeddings are (numerically) antipodal.
_DENSITY_FLOOR = 1e-12


def weighted_choice(weights, generator):
    """For each row of a non-negative matrix (each with a positive entry): a column drawn with those weights."""
    if len(weights) == 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def uniform_choice(mask, generator):
    """For each row of a boolean matrix (each with a True entry): a column drawn uniformly among its True ones."""
    return weighted_choice(mask.to(torch.float64), generator)


def positive_or_self(positives):
    """The anchors' candidate positives: their other same-class samples, or the anchor itself where it has none (as
    the authors' distance miner does)."""
    itself = torch.eye(len(positives), dtype=torch.bool, device=positives.device)
    return positives.where(positives.any(dim=1, keepdim=True), itself)


def log_inverse_sphere_density(distances, dim):
    """-log q(d) up to a constant, q the density of pairwise distances of uniform points on S^(dim-1)."""
    one_minus_quarter_square = (1.0 - distances.pow(2) / 4.0).clamp(min=_DENSITY_FLOOR)
    return -(dim - 2.0) * distances.log() - (dim - 3.0) / 2.0 * one_minus_quarter_square.log()


def distance_weighted_probabilities(distances, negatives, dim, upper_cutoff=None):
    """B x B; row a: the distribution of anchor a's negative, weight 1/q(d) on its `negatives` (d already clipped
    below). With `upper_cutoff`, negatives at or beyond it get weight 0 unless that leaves none, where the row is
    uniform over the negatives. Rows without negatives are all zero."""
    log_weights = log_inverse_sphere_density(distances, dim)
    candidates = negatives
    if upper_cutoff is not None:
        candidates = negatives & (distances < upper_cutoff)
        without_candidate = ~candidates.any(dim=1)
        candidates = candidates.where(~without_candidate[:, None], negatives)
        log_weights = log_weights.masked_fill(without_candidate[:, None], 0.0)
    probabilities = torch.softmax(log_weights.masked_fill(~candidates, -math.inf), dim=1)
    return probabilities.where(negatives.any(dim=1, keepdim=True), 0.0)
