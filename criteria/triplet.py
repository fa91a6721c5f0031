"""Triplet loss on mined triplets."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.distances import pair_distances

NAME = 'triplet'
KIND = 'pair'
MINERS = ('semihard',)
OPTIONS = {'margin': 'loss_triplet_margin'}


def add_flags(group):
    group.add_argument('--loss_triplet_margin', type=float, default=0.2)


class TripletLoss(Criterion):
    """Mean of relu(d_ap - d_an + margin) over the mined triplets (Euclidean distances); 0 if none."""

    def __init__(self, margin=0.2, miner=None):
        super().__init__(miner)
        self.margin = margin

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        terms = torch.relu(pair_distances(embeddings, anchors, positives)
                           - pair_distances(embeddings, anchors, negatives) + self.margin)
        return terms.sum() / max(len(terms), 1)


LOSS = TripletLoss
