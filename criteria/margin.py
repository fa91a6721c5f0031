"""Margin loss (Wu et al., ICCV 2017) with learnable per-class boundaries beta."""
import torch
from torch import nn

from criteria.base import Criterion, loss_dtype
from criteria.distances import pair_distances
from criteria.miners import distance_weighted_triplets


class MarginLoss(Criterion):
    """sum(relu(d_ap - beta + margin) + relu(beta - d_an + margin) + nu * beta) / #nonzero terms.

    Triplets come from distance-weighted sampling; beta is the anchor's class boundary (one
    learnable value per training class, trained at `beta_lr`), or the fixed `beta` when
    `beta_constant`. As in Wu et al., the nu * beta regularisation is summed over the triplets
    and divided by the count of nonzero hinge terms together with them; with no nonzero term the
    sum itself is returned.
    """

    def __init__(self, n_classes, margin=0.2, beta=1.2, beta_constant=False, nu=0.0, beta_lr=0.0005,
                 lower_cutoff=0.5, upper_cutoff=1.4):
        super().__init__()
        self.margin = margin
        self.nu = nu
        self.beta_lr = beta_lr
        self.lower_cutoff = lower_cutoff
        self.upper_cutoff = upper_cutoff
        self.beta_constant = beta_constant
        if beta_constant:
            self.register_buffer('beta', torch.full((n_classes,), float(beta)))
        else:
            self.beta = nn.Parameter(torch.full((n_classes,), float(beta)))

    def param_groups(self, lr=None):
        """beta at its own learning rate `beta_lr` (not `lr`) and without weight decay, as the authors' optimiser
        groups; nothing when beta is constant."""
        return [] if self.beta_constant else [{'params': [self.beta], 'lr': self.beta_lr, 'weight_decay': 0.0}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0):
        anchors, positives, negatives = distance_weighted_triplets(
            batch, labels, lower_cutoff=self.lower_cutoff, upper_cutoff=self.upper_cutoff)
        return self.loss_for_triplets(batch, labels, anchors, positives, negatives)

    def loss_for_triplets(self, batch, labels, anchors, positives, negatives):
        """The margin loss over the given triplets (index tensors into the batch)."""
        embeddings = batch.to(loss_dtype(batch))
        beta = self.beta[labels[anchors]].to(embeddings.dtype)
        positive_terms = torch.relu(pair_distances(embeddings, anchors, positives) - beta + self.margin)
        negative_terms = torch.relu(beta - pair_distances(embeddings, anchors, negatives) + self.margin)
        nonzero_terms = (positive_terms > 0).sum() + (negative_terms > 0).sum()
        total = (positive_terms + negative_terms).sum() + self.nu * beta.sum()
        return total / nonzero_terms.clamp(min=1)
