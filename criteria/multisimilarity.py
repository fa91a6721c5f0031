"""Multi-Similarity loss (Wang et al., CVPR 2019) with its hard-pair mining."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.pairs import label_masks

NAME = 'multisimilarity'
KIND = 'pair'
MINERS = ()
OPTIONS = {'pos_weight': 'loss_multisimilarity_pos_weight', 'neg_weight': 'loss_multisimilarity_neg_weight',
           'margin': 'loss_multisimilarity_margin', 'threshold': 'loss_multisimilarity_thresh'}


def add_flags(group):
    group.add_argument('--loss_multisimilarity_pos_weight', type=float, default=2.0)
    group.add_argument('--loss_multisimilarity_neg_weight', type=float, default=40.0)
    group.add_argument('--loss_multisimilarity_margin', type=float, default=0.1)
    group.add_argument('--loss_multisimilarity_thresh', type=float, default=0.5)


def _log_one_plus_sum_exp(values, mask):
    """Row-wise log(1 + sum over mask of exp(values)), stable: logsumexp with an appended zero."""
    masked = values.masked_fill(~mask, float('-inf'))
    return torch.logsumexp(torch.cat([masked, masked.new_zeros(len(masked), 1)], dim=1), dim=1)


class MultiSimilarityLoss(Criterion):
    """MS loss on dot-product similarities of (normalised) embeddings (Wang et al., CVPR 2019).

    Anchor i keeps the negatives j with sim_ij + margin > (its smallest positive similarity) and
    the positives j with sim_ij - margin < (its largest negative similarity). Anchors left
    without positives, negatives, kept positives or kept negatives are skipped; the loss is the
    mean over the remaining anchors, and 0 (still differentiable) when none remain.
    """

    def __init__(self, pos_weight=2.0, neg_weight=40.0, margin=0.1, threshold=0.5):
        super().__init__()
        self.pos_weight = pos_weight
        self.neg_weight = neg_weight
        self.margin = margin
        self.threshold = threshold

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        embeddings = batch.to(loss_dtype(batch))
        similarity = embeddings @ embeddings.T
        positives, negatives = label_masks(labels)

        mined = similarity.detach()
        least_similar_positive = mined.masked_fill(~positives, float('inf')).amin(dim=1, keepdim=True)
        most_similar_negative = mined.masked_fill(~negatives, float('-inf')).amax(dim=1, keepdim=True)
        hard_negatives = negatives & (mined + self.margin > least_similar_positive)
        hard_positives = positives & (mined - self.margin < most_similar_negative)
        kept = hard_positives.any(dim=1) & hard_negatives.any(dim=1)

        shifted = similarity - self.threshold
        per_anchor = (
            _log_one_plus_sum_exp(-self.pos_weight * shifted, hard_positives) / self.pos_weight
            + _log_one_plus_sum_exp(self.neg_weight * shifted, hard_negatives) / self.neg_weight)
        return per_anchor[kept].sum() / kept.sum().clamp(min=1)


LOSS = MultiSimilarityLoss
