"""Signal-to-noise-ratio triplet loss (Yuan et al., CVPR 2019), as the authors' criteria/snr.py computes it."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.miners import TRIPLET_MINERS
from plumbing.lazy import lazy_module

# pytorch-metric-learning imports scipy.stats (about a second): imported when the loss is built.
pml_distances = lazy_module('pytorch_metric_learning.distances')

NAME = 'snr'
KIND = 'pair'
MINERS = TRIPLET_MINERS
OPTIONS = {'margin': 'loss_snr_margin', 'reg_lambda': 'loss_snr_reg_lambda'}

WITHOUT_REGULARISATION = ('distance', 'random_distance')
"""The miners with which the authors' code sets reg_lambda to 0: it tests the miner's name against 'distance', the
name their random_distance miner gives itself too."""


def add_flags(group):
    group.add_argument('--loss_snr_margin', type=float, default=0.2)
    group.add_argument('--loss_snr_reg_lambda', type=float, default=0.005,
                       help='Weight of the mean |sum of an anchor\'s coordinates|; 0 with the distance and '
                            'random_distance miners, as in the authors\' code.')


class SNRLoss(Criterion):
    """sum_k relu(SNR(a_k, p_k) - SNR(a_k, n_k) + margin) / #active triplets + reg_lambda * mean_k |sum(a_k)|.

    SNR(a, b) = var(a - b) / var(a) over the coordinates (pytorch-metric-learning's SNRDistance, the authors'
    formula). Where no triplet is active the first term is 0 (the authors' is nan); without triplets the loss is 0.
    """

    def __init__(self, margin=0.2, reg_lambda=0.005, miner=None):
        super().__init__(miner)
        self.margin = margin
        self.reg_lambda = 0.0 if getattr(miner, 'name', None) in WITHOUT_REGULARISATION else reg_lambda
        self.snr = pml_distances.SNRDistance()

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        if len(anchors) == 0:
            return embeddings.sum() * 0
        anchor_embeddings = embeddings[anchors]
        terms = torch.relu(self.snr.pairwise_distance(anchor_embeddings, embeddings[positives])
                           - self.snr.pairwise_distance(anchor_embeddings, embeddings[negatives]) + self.margin)
        loss = terms.sum() / (terms > 0).sum().clamp(min=1)
        if self.reg_lambda:
            loss = loss + self.reg_lambda * anchor_embeddings.sum(dim=1).abs().mean()
        return loss


LOSS = SNRLoss
