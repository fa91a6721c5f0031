"""ArcFace (Deng et al., CVPR 2019): cross-entropy with an additive angular margin on the own class, as the authors
compute it."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from criteria.base import Criterion, loss_dtype, seeded_uniform
from criteria.flag_types import non_negative_float, positive_float

NAME = 'arcface'
KIND = 'classification'
MINERS = ()
OPTIONS = {'embed_dim': 'embed_dim', 'angular_margin': 'loss_arcface_angular_margin',
           'feature_scale': 'loss_arcface_feature_scale', 'lr': 'loss_arcface_lr', 'seed': 'seed'}
USES_CLASSES = True

COSINE_RANGE = (1e-10, 1 - 1e-10)
"""The authors clamp every embedding-class cosine to this range (also keeps acos's gradient finite)."""


def add_flags(group):
    group.add_argument('--loss_arcface_lr', type=non_negative_float, default=0.0005,
                       help='Learning rate of the class map (its own, not a multiple of --lr).')
    group.add_argument('--loss_arcface_angular_margin', type=float, default=0.5,
                       help='Angular margin m added to the angle of the own class, in radians.')
    group.add_argument('--loss_arcface_feature_scale', type=positive_float, default=16,
                       help='Scale s of the logits (an inverse temperature).')


class ArcFaceLoss(Criterion):
    """mean_i CE(s · [cos θ_ic, with cos(θ_iy_i + m) for the own class], y_i), cos θ_ic = x_i · ŵ_c: the embedding as
    given (normalised by the network's `_normalize`, not here), the rows ŵ_c of the class map L2-normalised.

    As the authors, every cosine is clamped to [1e-10, 1 − 1e-10] first: a class more than 90° away has the logit
    s · 1e-10 and sends no gradient (pytorch-metric-learning's ArcFaceLoss keeps negative cosines: another value). The
    class map starts as U(−1/√d, 1/√d) draws from a generator seeded with `seed` and learns at its own `lr` without
    weight decay, as the authors' optimiser group.
    """

    def __init__(self, n_classes, embed_dim, angular_margin=0.5, feature_scale=16.0, lr=0.0005, seed=0):
        super().__init__()
        self.class_map = nn.Parameter(seeded_uniform((n_classes, embed_dim), 1 / math.sqrt(embed_dim), seed))
        self.angular_margin = angular_margin
        self.feature_scale = feature_scale
        self.lr = lr

    def param_groups(self, lr=None):
        """The class map at its own learning rate, without weight decay."""
        return [{'params': [self.class_map], 'lr': self.lr, 'weight_decay': 0.0}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        dtype = loss_dtype(batch, self.class_map)
        class_map = F.normalize(self.class_map.to(dtype), dim=1)
        cosines = (batch.to(dtype) @ class_map.T).clamp(*COSINE_RANGE)
        own = labels[:, None]
        with_margin = torch.cos(torch.acos(cosines.gather(1, own)) + self.angular_margin)
        return F.cross_entropy(self.feature_scale * cosines.scatter(1, own, with_margin), labels)


LOSS = ArcFaceLoss
