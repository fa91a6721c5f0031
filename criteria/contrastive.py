"""Contrastive loss over all pairs of the batch."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.distances import pair_distances
from criteria.pairs import label_masks

NAME = 'contrastive'
KIND = 'pair'
MINERS = ()
OPTIONS = {'pos_margin': 'loss_contrastive_pos_margin', 'neg_margin': 'loss_contrastive_neg_margin'}


def add_flags(group):
    group.add_argument('--loss_contrastive_pos_margin', type=float, default=0.0)
    group.add_argument('--loss_contrastive_neg_margin', type=float, default=1.0)


def _mean_or_zero(terms):
    return terms.sum() / max(len(terms), 1)


class ContrastiveLoss(Criterion):
    """mean_{positive pairs} relu(d - pos_margin) + mean_{negative pairs} relu(neg_margin - d).

    d is the plain (not squared) Euclidean distance; each unordered pair counts once, and a mean
    over no pairs is 0.
    """

    def __init__(self, pos_margin=0.0, neg_margin=1.0):
        super().__init__()
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        embeddings = batch.to(loss_dtype(batch))
        positives, negatives = label_masks(labels)
        first, second = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
        distances = pair_distances(embeddings, first, second)
        is_positive = positives[first, second]
        is_negative = negatives[first, second]
        return (_mean_or_zero(torch.relu(distances[is_positive] - self.pos_margin))
                + _mean_or_zero(torch.relu(self.neg_margin - distances[is_negative])))


LOSS = ContrastiveLoss
