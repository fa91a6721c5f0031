"""The authors' `rho_distance` miner (Roth et al., ICML 2020): distance-weighted triplets, each replaced with
probability cp by a triplet that pushes two samples of the anchor's class apart."""
import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.miners.sampling import distance_weighted_probabilities, uniform_choice, weighted_choice
from criteria.pairs import label_masks

NAME = 'rho_distance'
OPTIONS = {'lower_cutoff': 'miner_rho_distance_lower_cutoff', 'push_probability': 'miner_rho_distance_cp'}

# The authors' distance matrix floors squared distances at 1e-4 before the square root.
_SMALLEST_DISTANCE = 1e-2


def add_flags(group):
    group.add_argument('--miner_rho_distance_lower_cutoff', type=float, default=0.5,
                       help='rho_distance miner: distances below are weighted as this one.')
    group.add_argument('--miner_rho_distance_upper_cutoff', type=float, default=1.4,
                       help='rho_distance miner: accepted and unused, as in the authors\' code.')
    group.add_argument('--miner_rho_distance_cp', type=float, default=0.2,
                       help='rho_distance miner: probability of a triplet (a, a, p) that pushes a positive away.')


def rho_distance_triplets(embeddings, labels, lower_cutoff=0.5, push_probability=0.2, generator=None):
    """One triplet per anchor with another same-class sample and an other-class one: with probability
    `push_probability` (a, a, p), else (a, p, n); p drawn uniformly from the anchor's other same-class samples, n by
    distance-weighted sampling (distances clipped below at `lower_cutoff`, no upper cutoff)."""
    points = embeddings.detach().to(torch.float64)
    distances = pairwise_distances(points).clamp(min=max(lower_cutoff, _SMALLEST_DISTANCE))
    positives, negatives = label_masks(labels)
    anchors = (positives.any(dim=1) & negatives.any(dim=1)).nonzero(as_tuple=True)[0]
    push = torch.rand(len(anchors), generator=generator, dtype=torch.float64, device=anchors.device) < push_probability
    positive_indices = uniform_choice(positives[anchors], generator)
    probabilities = distance_weighted_probabilities(distances, negatives, points.shape[1])[anchors]
    negative_indices = weighted_choice(probabilities, generator)
    return (anchors, anchors.where(push, positive_indices), positive_indices.where(push, negative_indices))


class RhoDistanceMiner(Miner):
    """rho_distance_triplets, drawn from the miner's generator."""

    name = NAME

    def __init__(self, lower_cutoff=0.5, push_probability=0.2, seed=0):
        super().__init__(seed)
        self.lower_cutoff = lower_cutoff
        self.push_probability = push_probability

    def forward(self, embeddings, labels):
        return rho_distance_triplets(embeddings, labels, self.lower_cutoff, self.push_probability,
                                     generator=self.generator(embeddings.device))


MINER = RhoDistanceMiner
