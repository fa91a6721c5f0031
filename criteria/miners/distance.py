"""Distance-weighted sampling (Wu et al., ICCV 2017) as the authors' `distance` miner does it: one triplet per anchor,
its negative drawn with weight 1/q(d)."""
import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.miners.sampling import (distance_weighted_probabilities, positive_or_self, uniform_choice,
                                     weighted_choice)
from criteria.pairs import label_masks

NAME = 'distance'
OPTIONS = {'lower_cutoff': 'miner_distance_lower_cutoff', 'upper_cutoff': 'miner_distance_upper_cutoff',
           'apply_upper_cutoff': 'miner_distance_apply_upper_cutoff'}


def add_flags(group):
    group.add_argument('--miner_distance_lower_cutoff', type=float, default=0.5,
                       help='distance, random_distance miners: distances below are weighted as this one.')
    group.add_argument('--miner_distance_upper_cutoff', type=float, default=1.4,
                       help='distance miner: negatives at or beyond it are left out, with '
                            '--miner_distance_apply_upper_cutoff only (the authors\' code has that line commented '
                            'out).')
    group.add_argument('--miner_distance_apply_upper_cutoff', action='store_true',
                       help='distance miner: leave out negatives at or beyond --miner_distance_upper_cutoff, as Wu et '
                            'al. (not the authors\' code).')


def negative_sampling_probabilities(embeddings, labels, lower_cutoff=0.5, upper_cutoff=None):
    """B x B; row a: the distribution of anchor a's negative under distance-weighted sampling.

    Other-class samples get weight 1/q(d), d the distance clipped below at `lower_cutoff`. Where `upper_cutoff` is
    given, those at or beyond it get weight 0, unless that leaves no candidate (then the row is uniform over the
    other classes). Rows of anchors without other-class samples are all zero.
    """
    points = embeddings.detach().to(torch.float64)
    distances = pairwise_distances(points).clamp(min=lower_cutoff)
    _, negatives = label_masks(labels)
    return distance_weighted_probabilities(distances, negatives, points.shape[1], upper_cutoff)


def distance_weighted_triplets(embeddings, labels, lower_cutoff=0.5, upper_cutoff=None, generator=None):
    """One triplet per anchor, every anchor of the batch (none where the batch holds one class).

    The positive is drawn uniformly from the anchor's other same-class samples, or is the anchor itself where it has
    none; the negative is drawn from `negative_sampling_probabilities`.
    """
    positives, negatives = label_masks(labels)
    anchors = negatives.any(dim=1).nonzero(as_tuple=True)[0]
    probabilities = negative_sampling_probabilities(embeddings, labels, lower_cutoff, upper_cutoff)
    return (anchors, uniform_choice(positive_or_self(positives)[anchors], generator),
            weighted_choice(probabilities[anchors], generator))


class DistanceMiner(Miner):
    """distance_weighted_triplets, drawn from the miner's generator; the upper cutoff only where asked for."""

    name = NAME

    def __init__(self, lower_cutoff=0.5, upper_cutoff=1.4, apply_upper_cutoff=False, seed=0):
        super().__init__(seed)
        self.lower_cutoff = lower_cutoff
        self.upper_cutoff = upper_cutoff if apply_upper_cutoff else None

    def forward(self, embeddings, labels):
        return distance_weighted_triplets(embeddings, labels, self.lower_cutoff, self.upper_cutoff,
                                          generator=self.generator(embeddings.device))


MINER = DistanceMiner
