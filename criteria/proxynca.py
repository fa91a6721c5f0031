"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017): one learned proxy per training class, as the authors compute it."""
import torch
import torch.nn.functional as F
from torch import nn

from criteria.base import Criterion, loss_dtype, seeded_generator
from criteria.flag_types import non_negative_float

NAME = 'proxynca'
KIND = 'proxy'
MINERS = ()
OPTIONS = {'embed_dim': 'embed_dim', 'lrmulti': 'loss_proxynca_lrmulti', 'seed': 'seed'}
USES_CLASSES = True

LENGTH = 3.0
"""The length embeddings and proxies are scaled to after L2 normalisation: the authors' fixed temperature."""


def add_flags(group):
    group.add_argument('--loss_proxynca_lrmulti', type=non_negative_float, default=50,
                       help='Learning-rate multiplier of the proxies: they learn at --lr times this.')


class ProxyNcaLoss(Criterion):
    """mean_i [ d(x_i, p_{y_i}) + log Σ_{c ≠ y_i} exp(−d(x_i, p_c)) ], d the squared Euclidean distance between the
    embedding and the proxies, each L2-normalised and scaled to length 3 (the authors' temperature).

    As in the paper's NCA, the own proxy is left out of the sum (pytorch-metric-learning's ProxyNCALoss keeps it in:
    another value). The proxies start as N(0, 1/64) draws (the authors' randn / 8) from a generator seeded with `seed`,
    and learn at lr · lrmulti without weight decay, as the authors' optimiser group.
    """

    def __init__(self, n_classes, embed_dim, lrmulti=50.0, seed=0):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, embed_dim, generator=seeded_generator(seed)) / 8)
        self.lrmulti = lrmulti

    def param_groups(self, lr=None):
        """The proxies at lr · lrmulti, without weight decay."""
        return [{'params': [self.proxies], 'lr': lr * self.lrmulti, 'weight_decay': 0.0}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        dtype = loss_dtype(batch, self.proxies)
        embeddings = LENGTH * F.normalize(batch.to(dtype), dim=1)
        proxies = LENGTH * F.normalize(self.proxies.to(dtype), dim=1)
        distances = (embeddings.square().sum(dim=1, keepdim=True) + proxies.square().sum(dim=1)
                     - 2 * embeddings @ proxies.T)
        own = labels[:, None] == torch.arange(len(proxies), device=labels.device)
        to_own = distances.gather(1, labels[:, None]).squeeze(1)
        to_others = torch.logsumexp((-distances).masked_fill(own, float('-inf')), dim=1)
        return (to_own + to_others).mean()


LOSS = ProxyNcaLoss
