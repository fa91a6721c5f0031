"""Distance-weighted sampling (Wu et al., ICCV 2017): negatives drawn with weight 1/q(d)."""
import math

import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.pairs import label_masks

NAME = 'distance'
OPTIONS = {'lower_cutoff': 'miner_distance_lower_cutoff', 'upper_cutoff': 'miner_distance_upper_cutoff'}


def add_flags(group):
    group.add_argument('--miner_distance_lower_cutoff', type=float, default=0.5)
    group.add_argument('--miner_distance_upper_cutoff', type=float, default=1.4)


def _log_inverse_sphere_density(distances, dim):
    """-log q(d) up to a constant, q the density of pairwise distances of uniform points on S^(dim-1)."""
    one_minus_quarter_square = (1.0 - distances.pow(2) / 4.0).clamp(min=1e-12)
    return -(dim - 2.0) * distances.log() - (dim - 3.0) / 2.0 * one_minus_quarter_square.log()


def negative_sampling_probabilities(embeddings, labels, lower_cutoff=0.5, upper_cutoff=1.4):
    """B x B; row a: the distribution of anchor a's negative under distance-weighted sampling.

    Other-class samples get weight 1/q(d), d the distance clipped below at `lower_cutoff`, and
    weight 0 when d >= `upper_cutoff`; when that leaves no candidate, the distribution is uniform
    over the other classes. Rows of anchors without other-class samples are all zero.
    """
    points = embeddings.detach().to(torch.float64)
    distances = pairwise_distances(points).clamp(min=lower_cutoff)
    _, negatives = label_masks(labels)
    candidates = negatives & (distances < upper_cutoff)
    log_weights = _log_inverse_sphere_density(distances, points.shape[1])
    without_candidate = ~candidates.any(dim=1)
    candidates[without_candidate] = negatives[without_candidate]
    log_weights[without_candidate] = 0.0
    probabilities = torch.softmax(log_weights.masked_fill(~candidates, -math.inf), dim=1)
    return probabilities.where(negatives.any(dim=1, keepdim=True), 0.0)


def distance_weighted_triplets(embeddings, labels, lower_cutoff=0.5, upper_cutoff=1.4, generator=None):
    """Distance-weighted sampling (Wu et al., ICCV 2017): one triplet per anchor.

    The positive is drawn uniformly from the anchor's class, the negative from
    `negative_sampling_probabilities`. Anchors without a positive or a negative give no triplet.
    """
    positives, negatives = label_masks(labels)
    anchors = (positives.any(dim=1) & negatives.any(dim=1)).nonzero(as_tuple=True)[0]
    if len(anchors) == 0:
        return anchors, anchors.clone(), anchors.clone()
    probabilities = negative_sampling_probabilities(embeddings, labels, lower_cutoff, upper_cutoff)
    positive_indices = torch.multinomial(positives[anchors].double(), 1, generator=generator).squeeze(1)
    negative_indices = torch.multinomial(probabilities[anchors], 1, generator=generator).squeeze(1)
    return anchors, positive_indices, negative_indices


class DistanceMiner(Miner):
    """distance_weighted_triplets, drawn from the miner's generator."""

    def __init__(self, lower_cutoff=0.5, upper_cutoff=1.4, seed=0):
        super().__init__(seed)
        self.lower_cutoff = lower_cutoff
        self.upper_cutoff = upper_cutoff

    def forward(self, embeddings, labels):
        return distance_weighted_triplets(embeddings, labels, self.lower_cutoff, self.upper_cutoff,
                                          generator=self.generator(embeddings.device))


MINER = DistanceMiner
