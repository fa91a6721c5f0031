"""Proxy-Anchor (Kim et al., CVPR 2020): one learned proxy per training class, each an anchor over the batch, as its
authors' code computes it, on pytorch-metric-learning's ProxyAnchorLoss. Beyond the OBD-SD authors' registry."""
import torch

from criteria.base import Criterion, seeded_generator
from criteria.flag_types import non_negative_float, positive_float
from plumbing.lazy import lazy_module

# pytorch-metric-learning imports scipy.stats (about a second): imported when the loss is built.
pml_losses = lazy_module('pytorch_metric_learning.losses')

NAME = 'proxyanchor'
KIND = 'proxy'
MINERS = ()
OPTIONS = {'embed_dim': 'embed_dim', 'alpha': 'loss_proxyanchor_alpha', 'delta': 'loss_proxyanchor_delta',
           'lrmulti': 'loss_proxyanchor_lrmulti', 'seed': 'seed'}
USES_CLASSES = True


def add_flags(group):
    group.add_argument('--loss_proxyanchor_alpha', type=positive_float, default=32,
                       help='Scale α of the proxy-embedding similarities (the paper\'s 32).')
    group.add_argument('--loss_proxyanchor_delta', type=float, default=0.1,
                       help='Margin δ (the paper\'s 0.1).')
    group.add_argument('--loss_proxyanchor_lrmulti', type=non_negative_float, default=100,
                       help='Learning-rate multiplier of the proxies: they learn at --lr times this (100, as Kim et '
                            'al.\'s code).')


class ProxyAnchorLoss(Criterion):
    """(1/|P⁺|) Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p)−δ)}) + (1/|P|) Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p)+δ)}),
    s the cosine similarity, P⁺ the proxies of the classes in the batch, X_p⁺ / X_p⁻ the batch's samples of / not of
    p's class.

    pytorch-metric-learning's loss computes Kim et al.'s value (with a stable log-sum-exp instead of their plain
    exponentials). The proxies start as Kim et al.'s, kaiming-normal (fan_out) draws, from a generator seeded with
    `seed`, and learn at lr · lrmulti with the network's weight decay, as in their optimiser. Computes in the proxies'
    dtype (float32; float64 after `.double()`).
    """

    def __init__(self, n_classes, embed_dim, alpha=32.0, delta=0.1, lrmulti=100.0, seed=0):
        super().__init__()
        self.alpha, self.delta, self.lrmulti = alpha, delta, lrmulti
        self.proxy_anchor = pml_losses.ProxyAnchorLoss(n_classes, embed_dim, margin=delta, alpha=alpha,
                                                       weight_init_func=torch.nn.init.zeros_)
        torch.nn.init.kaiming_normal_(self.proxies, mode='fan_out', generator=seeded_generator(seed))

    @property
    def proxies(self):
        """The learned proxies, n_classes × embed_dim."""
        return self.proxy_anchor.proxies

    def param_groups(self, lr=None):
        """The proxies at lr · lrmulti; the optimiser's weight decay (the network's) applies to them."""
        return [{'params': [self.proxies], 'lr': lr * self.lrmulti}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        return self.proxy_anchor(batch.to(self.proxies.dtype), labels)


LOSS = ProxyAnchorLoss
