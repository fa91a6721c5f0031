"""SoftTriple (Qian et al., ICCV 2019): several learned centroids per class, as the paper (and its code) defines it;
the authors' file, which names that code, crashes (docs/differences.md)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from criteria.base import Criterion, loss_dtype, seeded_uniform
from criteria.flag_types import non_negative_float, positive_float, positive_int

NAME = 'softtriplet'
KIND = 'proxy'
MINERS = ()
OPTIONS = {'embed_dim': 'embed_dim', 'n_centroids': 'loss_softtriplet_n_centroids',
           'margin_delta': 'loss_softtriplet_margin_delta', 'gamma': 'loss_softtriplet_gamma',
           'lam': 'loss_softtriplet_lambda', 'reg_weight': 'loss_softtriplet_reg_weight',
           'lrmulti': 'loss_softtriplet_lrmulti', 'seed': 'seed'}
USES_CLASSES = True

REGULARISER_EPS = 1e-5
"""Added under the square root of the centroid regulariser, as the paper's code: a finite gradient for equal
centroids."""


def add_flags(group):
    group.add_argument('--loss_softtriplet_n_centroids', type=positive_int, default=2, help='Centroids per class (K).')
    group.add_argument('--loss_softtriplet_margin_delta', type=float, default=0.01,
                       help='Margin δ subtracted from the similarity to the own class.')
    group.add_argument('--loss_softtriplet_gamma', type=positive_float, default=0.1,
                       help='Temperature γ of the softmax over a class\'s centroids (similarities divided by it).')
    group.add_argument('--loss_softtriplet_lambda', type=positive_float, default=8,
                       help='Scale λ of the class similarities in the cross-entropy (an inverse temperature).')
    group.add_argument('--loss_softtriplet_reg_weight', type=non_negative_float, default=0.2,
                       help='Weight τ of the regulariser that pulls a class\'s centroids together.')
    group.add_argument('--loss_softtriplet_lrmulti', type=non_negative_float, default=1,
                       help='Learning-rate multiplier of the centroids: they learn at --lr times this.')


class SoftTripleLoss(Criterion):
    """CE(λ · (S_ic − δ·[c = y_i]), y_i) + τ · R, with K centroids w_ck per class (L2-normalised):

    S_ic = Σ_k q_ck x_i·w_ck, q_c = softmax over the class's centroids of x_i·w_ck / γ (the embedding as given);
    R = Σ_c Σ_{k<l} √(2 + 1e-5 − 2 w_ck·w_cl) / (C·K·(K−1)), 0 with one centroid per class.
    The centroids are held as the authors' (embed_dim × C·K) matrix, column c·K + k, start as U(−1/√(C·K), 1/√(C·K))
    draws from a generator seeded with `seed` (the paper's and the authors' start) and learn at lr · lrmulti without
    weight decay.
    """

    def __init__(self, n_classes, embed_dim, n_centroids=2, margin_delta=0.01, gamma=0.1, lam=8.0, reg_weight=0.2,
                 lrmulti=1.0, seed=0):
        super().__init__()
        if n_centroids < 1:
            raise ValueError(f'softtriplet needs at least one centroid per class, got {n_centroids}')
        n_columns = n_classes * n_centroids
        self.centroids = nn.Parameter(seeded_uniform((embed_dim, n_columns), 1 / math.sqrt(n_columns), seed))
        self.n_classes, self.n_centroids = n_classes, n_centroids
        self.margin_delta, self.gamma, self.lam, self.reg_weight = margin_delta, gamma, lam, reg_weight
        self.lrmulti = lrmulti

    def param_groups(self, lr=None):
        """The centroids at lr · lrmulti, without weight decay."""
        return [{'params': [self.centroids], 'lr': lr * self.lrmulti, 'weight_decay': 0.0}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        dtype = loss_dtype(batch, self.centroids)
        centroids = self.centroids.to(dtype)
        # Each column (centroid) to unit length, as F.normalize(dim=0) with its eps, without its slow strided backward
        centroids = centroids * centroids.square().sum(dim=0, keepdim=True).clamp(min=1e-24).rsqrt()
        similarities = (batch.to(dtype) @ centroids).view(len(batch), self.n_classes, self.n_centroids)
        weights = torch.softmax(similarities / self.gamma, dim=2)
        class_similarities = (weights * similarities).sum(dim=2)
        own = labels[:, None] == torch.arange(self.n_classes, device=labels.device)
        logits = self.lam * (class_similarities - self.margin_delta * own.to(dtype))
        return F.cross_entropy(logits, labels) + self.reg_weight * self.regulariser(centroids)

    def regulariser(self, centroids):
        """R of the normalised centroids: their distances within each class, over C·K·(K−1)."""
        if self.n_centroids == 1:
            return centroids.new_zeros(())
        per_class = centroids.view(-1, self.n_classes, self.n_centroids)
        if self.n_centroids == 2:  # one pair a class (the default): a product is cheaper than a batched matmul
            products = (per_class[:, :, 0] * per_class[:, :, 1]).sum(dim=0)
        else:
            first, second = torch.triu_indices(self.n_centroids, self.n_centroids, offset=1, device=centroids.device)
            products = torch.einsum('dck,dcl->ckl', per_class, per_class)[:, first, second]
        distances = torch.sqrt(2 + REGULARISER_EPS - 2 * products)
        return distances.sum() / (self.n_classes * self.n_centroids * (self.n_centroids - 1))


LOSS = SoftTripleLoss
