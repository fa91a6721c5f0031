"""Normalised softmax (Zhai & Wu, BMVC 2019): cross-entropy over a learned class map, as the authors compute it, on
pytorch-metric-learning's NormalizedSoftmaxLoss."""
import math

import torch

from criteria.base import Criterion, seeded_uniform
from criteria.flag_types import non_negative_float, positive_float
from plumbing.lazy import lazy_module

# pytorch-metric-learning imports scipy.stats (about a second): imported when the loss is built.
pml_distances = lazy_module('pytorch_metric_learning.distances')
pml_losses = lazy_module('pytorch_metric_learning.losses')

NAME = 'softmax'
KIND = 'classification'
MINERS = ()
OPTIONS = {'embed_dim': 'embed_dim', 'temperature': 'loss_softmax_temperature', 'lr': 'loss_softmax_lr',
           'seed': 'seed'}
USES_CLASSES = True


def add_flags(group):
    group.add_argument('--loss_softmax_lr', type=non_negative_float, default=0.00001,
                       help='Learning rate of the class map (its own, not a multiple of --lr).')
    group.add_argument('--loss_softmax_temperature', type=positive_float, default=0.05,
                       help='Temperature dividing the embedding-class similarities.')


class NormalizedSoftmaxLoss(Criterion):
    """mean_i CE(x_i · ŵ_c / temperature, y_i): the embedding as given (normalised by the network's `_normalize`, not
    here), the rows ŵ_c of the class map L2-normalised.

    pytorch-metric-learning's loss with a dot product that leaves the embeddings as they are computes exactly this;
    it holds the class map transposed, as `W` (embed_dim × n_classes). The map learns at its own `lr` without weight
    decay, as the authors' optimiser group. Computes in the class map's dtype (float32; float64 after `.double()`).
    """

    def __init__(self, n_classes, embed_dim, temperature=0.05, lr=0.00001, seed=0):
        super().__init__()
        self.lr = lr
        self.temperature = temperature
        self.normalized_softmax = pml_losses.NormalizedSoftmaxLoss(
            n_classes, embed_dim, temperature=temperature,
            distance=pml_distances.DotProductSimilarity(normalize_embeddings=False),
            weight_init_func=torch.nn.init.zeros_)
        with torch.no_grad():
            self.class_map.copy_(seeded_uniform((n_classes, embed_dim), 1 / math.sqrt(embed_dim), seed))

    @property
    def class_map(self):
        """The class map as the authors lay it out, n_classes × embed_dim (a view of the learned parameter)."""
        return self.normalized_softmax.W.T

    def param_groups(self, lr=None):
        """The class map at its own learning rate, without weight decay."""
        return [{'params': [self.normalized_softmax.W], 'lr': self.lr, 'weight_decay': 0.0}]

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        return self.normalized_softmax(batch.to(self.normalized_softmax.W.dtype), labels)


LOSS = NormalizedSoftmaxLoss
