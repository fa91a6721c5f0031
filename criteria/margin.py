"""Margin loss (Wu et al., ICCV 2017) with learnable per-class boundaries beta, as the authors' criteria/margin.py
computes it."""
import torch
from torch import nn

from criteria.base import Criterion, loss_dtype
from criteria.miners import TRIPLET_MINERS

NAME = 'margin'
KIND = 'pair'
MINERS = TRIPLET_MINERS
OPTIONS = {'margin': 'loss_margin_margin', 'beta': 'loss_margin_beta', 'beta_constant': 'loss_margin_beta_constant',
           'nu': 'loss_margin_nu', 'beta_lr': 'loss_margin_beta_lr'}
USES_CLASSES = True

# The authors' distance: sqrt(|a - b|² + 1e-8).
_SQRT_EPS = 1e-8


def add_flags(group):
    group.add_argument('--loss_margin_margin', type=float, default=0.2)
    group.add_argument('--loss_margin_beta', type=float, default=1.2)
    group.add_argument('--loss_margin_beta_lr', type=float, default=0.0005)
    group.add_argument('--loss_margin_beta_constant', action='store_true')
    group.add_argument('--loss_margin_nu', type=float, default=0.0)


def triplet_distances(embeddings, first, second):
    """sqrt(|x_first - x_second|² + 1e-8) for every pair (first[k], second[k])."""
    return ((embeddings[first] - embeddings[second]).pow(2).sum(dim=1) + _SQRT_EPS).sqrt()


class MarginLoss(Criterion):
    """sum(relu(d_ap - beta + margin) + relu(beta - d_an + margin)) / #triplets with an active hinge + nu * sum(beta).

    As the authors' code: the divisor counts the triplets with either hinge above 0 (their `+` of two bool tensors
    is an OR), 1 where none is; nu * (the anchors' betas summed over the triplets) is added after the division, and
    only where nu is not 0. beta is the anchor's class boundary (one learnable value per training class, trained at
    `beta_lr`), or the fixed `beta` when `beta_constant`. Without triplets the loss is 0.
    """

    def __init__(self, n_classes, margin=0.2, beta=1.2, beta_constant=False, nu=0.0, beta_lr=0.0005, miner=None):
        super().__init__(miner)
        self.margin = margin
        self.nu = nu
        self.beta_lr = beta_lr
        self.beta_constant = beta_constant
        if beta_constant:
            self.register_buffer('beta', torch.full((n_classes,), float(beta)))
        else:
            self.beta = nn.Parameter(torch.full((n_classes,), float(beta)))

    def param_groups(self, lr=None):
        """beta at its own learning rate `beta_lr` (not `lr`) and without weight decay, as the authors' optimiser
        groups; nothing when beta is constant."""
        return [] if self.beta_constant else [{'params': [self.beta], 'lr': self.beta_lr, 'weight_decay': 0.0}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        anchors, positives, negatives = self.tuples(batch, labels, indices_tuple)
        embeddings = batch.to(loss_dtype(batch))
        beta = self.beta[labels[anchors]].to(embeddings.dtype)
        positive_terms = torch.relu(triplet_distances(embeddings, anchors, positives) - beta + self.margin)
        negative_terms = torch.relu(beta - triplet_distances(embeddings, anchors, negatives) + self.margin)
        active = ((positive_terms > 0) | (negative_terms > 0)).sum().clamp(min=1)
        loss = (positive_terms + negative_terms).sum() / active
        if self.nu:
            loss = loss + self.nu * beta.sum()
        return loss


LOSS = MarginLoss
