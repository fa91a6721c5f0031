"""Semi-hard triplets (Schroff et al., FaceNet, CVPR 2015); the authors' `semihard` miner crashes as written."""
import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.miners.sampling import uniform_choice
from criteria.pairs import label_masks

NAME = 'semihard'
OPTIONS = {}
LOSS_OPTIONS = ('margin',)


def semihard_triplets(embeddings, labels, margin, generator=None):
    """One triplet per positive pair (a, p) that has a semi-hard negative, as FaceNet mines: every anchor-positive
    pair, with a negative n of d_ap < d_an < d_ap + margin (Euclidean distances) drawn uniformly among them. Pairs
    without a semi-hard negative give no triplet."""
    distances = pairwise_distances(embeddings.detach().to(torch.float64))
    positives, negatives = label_masks(labels)
    anchors, positive_indices = positives.nonzero(as_tuple=True)
    d_ap = distances[anchors, positive_indices][:, None]
    d_an = distances[anchors]
    semihard = negatives[anchors] & (d_an > d_ap) & (d_an < d_ap + margin)
    found = semihard.any(dim=1)
    return anchors[found], positive_indices[found], uniform_choice(semihard[found], generator)


class SemihardMiner(Miner):
    """semihard_triplets with the loss's margin (0.2 for a loss without one), drawn from the miner's generator."""

    name = NAME

    def __init__(self, margin=0.2, seed=0):
        super().__init__(seed)
        self.margin = margin

    def forward(self, embeddings, labels):
        return semihard_triplets(embeddings, labels, self.margin, generator=self.generator(embeddings.device))


MINER = SemihardMiner
