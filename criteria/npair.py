"""N-pair loss (Sohn, NeurIPS 2016) as the authors' criteria/npair.py computes it."""
import torch

from criteria.base import Criterion, loss_dtype

NAME = 'npair'
KIND = 'pair'
MINERS = ('npair',)
OPTIONS = {'l2_weight': 'loss_npair_l2', 'arch': 'arch'}

# The authors divide a BN-Inception's embeddings by 4 "to avoid initial overflow for high embedding dimensions".
_BNINCEPTION_SCALE = 0.25


def add_flags(group):
    group.add_argument('--loss_npair_l2', type=float, default=0.005,
                       help='Weight of the mean embedding norm (the paper\'s 0.02 times the 0.25 of its code).')


def log_one_plus_sum_exp(values, mask):
    """Row-wise log(1 + sum over mask of exp(values)), stable: logsumexp with an appended zero."""
    masked = values.masked_fill(~mask, float('-inf'))
    return torch.logsumexp(torch.cat([masked, masked.new_zeros(len(masked), 1)], dim=1), dim=1)


def npair_terms(embeddings, anchors, positives, negatives, clamp=None):
    """Per anchor a: log(1 + sum_{n in negatives[a]} exp(x_a . (x_n - x_p))), the inner products clamped to
    [-clamp, clamp] where `clamp` is given."""
    similarities = embeddings[anchors] @ embeddings.T
    inner = similarities - similarities.gather(1, positives[:, None])
    if clamp is not None:
        inner = inner.clamp(min=-clamp, max=clamp)
    return log_one_plus_sum_exp(inner, negatives)


class NpairLoss(Criterion):
    """mean_a log(1 + sum_n exp(x_a . (x_n - x_p))) + l2_weight * mean_b |x_b| on the npair miner's tuples
    (anchors, one positive each, negative mask); 0 without anchors.

    With a BN-Inception `arch` the embeddings are first divided by 4, in both terms, as the authors' code does. The
    log(1 + sum exp) is computed stably: equal to theirs where theirs is finite (theirs overflows to inf beyond
    inner products of about 88 in float32).
    """

    def __init__(self, l2_weight=0.005, arch='', miner=None):
        super().__init__(miner)
        self.l2_weight = l2_weight
        self.scale = _BNINCEPTION_SCALE if 'bninception' in arch else 1.0

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        if self.scale != 1:
            embeddings = embeddings * self.scale
        if len(anchors) == 0:
            return embeddings.sum() * 0
        return (npair_terms(embeddings, anchors, positives, negatives).mean()
                + self.l2_weight * torch.linalg.vector_norm(embeddings, dim=1).mean())


LOSS = NpairLoss
