"""Smooth-AP (Brown et al., ECCV 2020), the loss the authors' criteria/ap_loss.py wraps (that file crashes: it reads
flags their parser does not define); it computes what their criteria/smooth_ap_loss.py, the Smooth-AP authors'
code, computes."""
import torch

from criteria.base import Criterion, loss_dtype

NAME = 'ap_loss'
KIND = 'pair'
MINERS = ()
OPTIONS = {'anneal': 'loss_ap_loss_anneal'}

# The Smooth-AP code clamps the sigmoid's exponent to [-50, 50].
_EXPONENT_CLAMP = 50.0


def add_flags(group):
    group.add_argument('--loss_ap_loss_anneal', type=float, default=0.01,
                       help='Temperature of the sigmoid that smooths the ranks (the authors\' fixed 0.01).')


class SmoothAPLoss(Criterion):
    """1 - mean_q AP_q, AP_q = (1/|P_q|) sum_{i in P_q} R(i, P_q) / R(i, batch) with smoothed ranks
    R(i, S) = 1 + sum_{j in S, j != i} sigmoid((s_qj - s_qi) / anneal), s the dot products.

    As the Smooth-AP code, the query is one of its own positives P_q (its class in the batch) and one of the ranked
    items; the paper leaves it out of both. The sigmoid's argument is clamped to [-50, 50] as there. Classes may
    have any number of samples in the batch.
    """

    def __init__(self, anneal=0.01):
        super().__init__()
        if anneal <= 0:
            raise ValueError(f'the Smooth-AP temperature must be positive, got {anneal}')
        self.anneal = anneal

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        embeddings = batch.to(loss_dtype(batch))
        similarities = embeddings @ embeddings.T
        same_class = (labels[:, None] == labels[None, :]).to(embeddings.dtype)
        # step[q, i, j]: the smoothed indicator that j ranks before i for query q (j == i excluded below).
        differences = similarities[:, None, :] - similarities[:, :, None]
        step = torch.sigmoid((differences / self.anneal).clamp(-_EXPONENT_CLAMP, _EXPONENT_CLAMP))
        step = step * (1 - torch.eye(len(labels), dtype=embeddings.dtype, device=embeddings.device))
        rank_all = 1 + step.sum(dim=2)
        rank_positive = 1 + torch.einsum('qij,qj->qi', step, same_class)
        precision = (same_class * rank_positive / rank_all).sum(dim=1) / same_class.sum(dim=1)
        return 1 - precision.mean()


LOSS = SmoothAPLoss
