"""Triplet loss on the miner's triplets, as the authors' criteria/triplet.py computes it (squared distances)."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.miners import TRIPLET_MINERS

NAME = 'triplet'
KIND = 'pair'
MINERS = TRIPLET_MINERS
OPTIONS = {'margin': 'loss_triplet_margin'}


def add_flags(group):
    group.add_argument('--loss_triplet_margin', type=float, default=0.2)


def squared_distances(embeddings, first, second):
    return (embeddings[first] - embeddings[second]).pow(2).sum(dim=1)


class TripletLoss(Criterion):
    """Mean of relu(|a - p|² - |a - n|² + margin) over the triplets (squared Euclidean distances, inactive triplets
    included in the mean); 0 without triplets."""

    def __init__(self, margin=0.2, miner=None):
        super().__init__(miner)
        self.margin = margin

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        terms = torch.relu(squared_distances(embeddings, anchors, positives)
                           - squared_distances(embeddings, anchors, negatives) + self.margin)
        return terms.sum() / max(len(terms), 1)


LOSS = TripletLoss
