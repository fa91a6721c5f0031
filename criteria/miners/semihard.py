"""Semi-hard triplets (Schroff et al., FaceNet, CVPR 2015)."""
import torch

from criteria.distances import pairwise_distances
from criteria.miners.base import Miner
from criteria.pairs import label_masks

NAME = 'semihard'
OPTIONS = {}
LOSS_OPTIONS = ('margin',)


def semihard_triplets(embeddings, labels, margin):
    """One triplet per positive pair (a, p) that has a semi-hard negative.

    Semi-hard negatives n satisfy d_ap < d_an < d_ap + margin (FaceNet); the closest of them is
    taken. Positive pairs without any semi-hard negative give no triplet.
    """
    distances = pairwise_distances(embeddings.detach().to(torch.float64))
    positives, negatives = label_masks(labels)
    anchors, positive_indices = positives.nonzero(as_tuple=True)
    d_ap = distances[anchors, positive_indices][:, None]
    d_an = distances[anchors]
    semihard = negatives[anchors] & (d_an > d_ap) & (d_an < d_ap + margin)
    closest = d_an.masked_fill(~semihard, float('inf')).argmin(dim=1)
    found = semihard.any(dim=1)
    return anchors[found], positive_indices[found], closest[found]


class SemihardMiner(Miner):
    """semihard_triplets with the loss's margin."""

    def __init__(self, margin=0.2, seed=0):
        super().__init__(seed)
        self.margin = margin

    def forward(self, embeddings, labels):
        return semihard_triplets(embeddings, labels, self.margin)


MINER = SemihardMiner
