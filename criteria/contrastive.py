"""Contrastive loss on the miner's (anchor, positive) and (anchor, negative) pairs, as the authors'
criteria/contrastive.py computes it."""
import torch
import torch.nn.functional as F

from criteria.base import Criterion, loss_dtype
from criteria.miners import TRIPLET_MINERS

NAME = 'contrastive'
KIND = 'pair'
MINERS = TRIPLET_MINERS
OPTIONS = {'pos_margin': 'loss_contrastive_pos_margin', 'neg_margin': 'loss_contrastive_neg_margin'}


def add_flags(group):
    group.add_argument('--loss_contrastive_pos_margin', type=float, default=0.0)
    group.add_argument('--loss_contrastive_neg_margin', type=float, default=1.0)


def _mean_or_zero(terms):
    return terms.sum() / max(len(terms), 1)


class ContrastiveLoss(Criterion):
    """mean_k relu(d(a_k, p_k) - pos_margin) + mean_k relu(neg_margin - d(a_k, n_k)) over the triplets k.

    d is torch's pairwise distance |a - b + 1e-6| (nn.PairwiseDistance, as the authors); each triplet gives one
    positive and one negative pair, repeats included; a mean over no triplets is 0.
    """

    def __init__(self, pos_margin=0.0, neg_margin=1.0, miner=None):
        super().__init__(miner)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        positive_distances = F.pairwise_distance(embeddings[anchors], embeddings[positives])
        negative_distances = F.pairwise_distance(embeddings[anchors], embeddings[negatives])
        return (_mean_or_zero(torch.relu(positive_distances - self.pos_margin))
                + _mean_or_zero(torch.relu(self.neg_margin - negative_distances)))


LOSS = ContrastiveLoss
