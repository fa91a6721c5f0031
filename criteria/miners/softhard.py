"""The authors' `softhard` miner: per anchor, a random hard positive and a random hard negative where there are any."""
import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.miners.sampling import uniform_choice
from criteria.pairs import label_masks

NAME = 'softhard'
OPTIONS = {}


def softhard_triplets(embeddings, labels, generator=None):
    """One triplet per anchor with another same-class sample and an other-class one.

    Hard negatives are closer to the anchor than its farthest positive, hard positives farther than its closest
    negative; the positive is drawn uniformly from the hard positives (from all positives where none is hard), the
    negative likewise.
    """
    distances = pairwise_distances(embeddings.detach().to(torch.float64))
    positives, negatives = label_masks(labels)
    anchors = (positives.any(dim=1) & negatives.any(dim=1)).nonzero(as_tuple=True)[0]
    positives, negatives, distances = positives[anchors], negatives[anchors], distances[anchors]
    farthest_positive = distances.masked_fill(~positives, -torch.inf).amax(dim=1, keepdim=True)
    closest_negative = distances.masked_fill(~negatives, torch.inf).amin(dim=1, keepdim=True)
    hard_positives = positives & (distances > closest_negative)
    hard_negatives = negatives & (distances < farthest_positive)
    positive_pool = hard_positives.where(hard_positives.any(dim=1, keepdim=True), positives)
    negative_pool = hard_negatives.where(hard_negatives.any(dim=1, keepdim=True), negatives)
    return anchors, uniform_choice(positive_pool, generator), uniform_choice(negative_pool, generator)


class SofthardMiner(Miner):
    """softhard_triplets, drawn from the miner's generator."""

    name = NAME

    def forward(self, embeddings, labels):
        return softhard_triplets(embeddings, labels, generator=self.generator(embeddings.device))


MINER = SofthardMiner
