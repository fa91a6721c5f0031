"""The authors' `random_distance` miner: distance-weighted triplets of the batch with its labels shuffled."""
import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.miners.sampling import distance_weighted_probabilities, uniform_choice, weighted_choice
from criteria.pairs import label_masks

NAME = 'random_distance'
OPTIONS = {'lower_cutoff': 'miner_distance_lower_cutoff'}


def random_distance_triplets(embeddings, labels, lower_cutoff=0.5, generator=None):
    """The labels are shuffled (a random permutation of the batch's), then: one triplet per anchor that has another
    sample and an other-sample of its shuffled class, the positive drawn uniformly from the first, the negative by
    distance-weighted sampling from the second (distances clipped below at `lower_cutoff`, no upper cutoff)."""
    shuffled = labels[torch.randperm(len(labels), generator=generator, device=labels.device)]
    points = embeddings.detach().to(torch.float64)
    distances = pairwise_distances(points).clamp(min=lower_cutoff)
    positives, negatives = label_masks(shuffled)
    anchors = (positives.any(dim=1) & negatives.any(dim=1)).nonzero(as_tuple=True)[0]
    probabilities = distance_weighted_probabilities(distances, negatives, points.shape[1])[anchors]
    return anchors, uniform_choice(positives[anchors], generator), weighted_choice(probabilities, generator)


class RandomDistanceMiner(Miner):
    """random_distance_triplets, drawn from the miner's generator."""

    name = NAME

    def __init__(self, lower_cutoff=0.5, seed=0):
        super().__init__(seed)
        self.lower_cutoff = lower_cutoff

    def forward(self, embeddings, labels):
        return random_distance_triplets(embeddings, labels, self.lower_cutoff,
                                        generator=self.generator(embeddings.device))


MINER = RandomDistanceMiner
