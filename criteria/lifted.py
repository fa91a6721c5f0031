"""Lifted structure loss (Oh Song et al., CVPR 2016) as the authors' criteria/lifted.py computes it, their
per-coordinate reading included."""
import torch

from criteria.base import Criterion, loss_dtype

NAME = 'lifted'
KIND = 'pair'
MINERS = ('lifted',)
OPTIONS = {'margin': 'loss_lifted_neg_margin', 'l2_weight': 'loss_lifted_l2'}

# nn.PairwiseDistance's eps, which the authors' distances add to each difference.
_PAIRWISE_EPS = 1e-6


def add_flags(group):
    group.add_argument('--loss_lifted_neg_margin', type=float, default=1.0)
    group.add_argument('--loss_lifted_l2', type=float, default=0.005,
                       help='Weight of the mean embedding norm added to the lifted loss.')


def coordinate_spreads(anchor_embeddings, embeddings, members):
    """A x D: for anchor a and coordinate d, sqrt(sum over the members b of a of (x_ad - x_bd + 1e-6)²).

    Computed as n (c - mean)² + (sum of squares - n mean²), c = x_ad + 1e-6 and n, mean the members' count and mean
    coordinate: a matrix product instead of an A x B x D tensor. The second part, the members' own spread, is
    clipped at 0 against rounding; the first is exact where the members coincide with the anchor (duplicates).
    """
    weights = members.to(embeddings.dtype)
    counts = weights.sum(dim=1, keepdim=True).clamp(min=1)
    sums, square_sums = (weights @ torch.cat([embeddings, embeddings * embeddings], dim=1)).chunk(2, dim=1)
    means = sums / counts
    own_spread = (square_sums - sums * means).clamp(min=0)
    return torch.addcmul(own_spread, counts, (anchor_embeddings + _PAIRWISE_EPS - means).square()).sqrt()


class LiftedLoss(Criterion):
    """mean_a relu(logsumexp_d u_ad + logsumexp_d (margin - v_ad)) + l2_weight * mean_b |x_b|.

    As the authors' code computes it: their nn.PairwiseDistance runs over the anchor's positive (negative) set, not
    over the coordinates, so u_ad = sqrt(sum_{p in P_a} (x_ad - x_pd + 1e-6)²) (v_ad likewise over the negatives N_a)
    is a spread per coordinate d, and the log-sum-exp runs over the coordinates. Tuples are (anchors, positive mask,
    negative mask) from the lifted miner; anchors without a negative (a batch of one class) are left out, and the
    loss is 0 where no anchor remains.
    """

    def __init__(self, margin=1.0, l2_weight=0.005, miner=None):
        super().__init__(miner)
        self.margin = margin
        self.l2_weight = l2_weight

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        kept = negatives.any(dim=1)
        anchors, positives, negatives = anchors[kept], positives[kept], negatives[kept]
        embeddings = batch.to(loss_dtype(batch))
        if len(anchors) == 0:
            return embeddings.sum() * 0
        anchor_embeddings = embeddings[anchors].repeat(2, 1)
        positive_spreads, negative_spreads = coordinate_spreads(anchor_embeddings, embeddings,
                                                                torch.cat([positives, negatives])).chunk(2)
        positive_term = torch.logsumexp(positive_spreads, dim=1)
        negative_term = torch.logsumexp(self.margin - negative_spreads, dim=1)
        return (torch.relu(positive_term + negative_term).mean()
                + self.l2_weight * torch.linalg.vector_norm(embeddings, dim=1).mean())


LOSS = LiftedLoss
