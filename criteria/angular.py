"""Angular loss with its N-pair part (Wang et al., ICCV 2017), as the authors' criteria/angular.py means it (their
file crashes: it indexes the batch with a list of index arrays)."""
import math

import torch
import torch.nn.functional as F

from criteria.base import Criterion, loss_dtype
from criteria.npair import log_one_plus_sum_exp

NAME = 'angular'
KIND = 'pair'
MINERS = ('npair',)
OPTIONS = {'alpha': 'loss_angular_alpha', 'angular_weight': 'loss_angular_npair_ang_weight',
           'l2_weight': 'loss_angular_npair_l2'}

# The authors clamp the N-pair inner products to [-50, 50].
_NPAIR_CLAMP = 50.0


def add_flags(group):
    group.add_argument('--loss_angular_alpha', type=float, default=45.0, help='Angular margin in degrees.')
    group.add_argument('--loss_angular_npair_ang_weight', type=float, default=2.0,
                       help='Weight lambda of the angular term against the N-pair term.')
    group.add_argument('--loss_angular_npair_l2', type=float, default=0.005,
                       help='Weight of the mean embedding norm.')


class AngularLoss(Criterion):
    """npair + angular_weight * angular + l2_weight * mean_b |x_b| on the npair miner's tuples; 0 without anchors.

    angular = mean_a log(1 + sum_n exp(4 tan²(alpha) (x̂_a + x̂_p) . x̂_n - 2 (1 + tan²(alpha)) x̂_a . x̂_p)) on the
    L2-normalised embeddings x̂ (the paper's f_ang); npair = mean_a log(1 + sum_n exp(x_a . (x_n - x_p))) on the
    embeddings as they are, the inner products clamped to [-50, 50] (the authors' file).
    """

    def __init__(self, alpha=45.0, angular_weight=2.0, l2_weight=0.005, miner=None):
        super().__init__(miner)
        self.squared_tangent = math.tan(math.radians(alpha)) ** 2
        self.angular_weight = angular_weight
        self.l2_weight = l2_weight

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        if len(anchors) == 0:
            return embeddings.sum() * 0
        normalised = F.normalize(embeddings, dim=1)
        unit_anchors, unit_positives = normalised[anchors], normalised[positives]
        # One batched product: [x_a . x_n] for the N-pair term, [(x̂_a + x̂_p) . x̂_n] for the angular one.
        products = torch.bmm(torch.stack([embeddings[anchors], unit_anchors + unit_positives]),
                             torch.stack([embeddings, normalised]).transpose(1, 2))
        npair_values = (products[0] - products[0].gather(1, positives[:, None])).clamp(-_NPAIR_CLAMP, _NPAIR_CLAMP)
        anchor_positive = (unit_anchors * unit_positives).sum(dim=1, keepdim=True)
        angular_values = 4 * self.squared_tangent * products[1] - 2 * (1 + self.squared_tangent) * anchor_positive
        npair, angular = log_one_plus_sum_exp(torch.cat([npair_values, angular_values]),
                                              negatives.repeat(2, 1)).view(2, -1).mean(dim=1)
        return npair + self.angular_weight * angular + self.l2_weight * torch.linalg.vector_norm(embeddings,
                                                                                                 dim=1).mean()


LOSS = AngularLoss
