"""Quadruplet loss (Chen et al., CVPR 2017), as the authors' criteria/quadruplet.py computes it."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.miners import TRIPLET_MINERS
from criteria.miners.sampling import uniform_choice
from criteria.random_source import RandomSource

NAME = 'quadruplet'
KIND = 'pair'
MINERS = TRIPLET_MINERS
OPTIONS = {'margin_alpha_1': 'loss_quadruplet_margin_alpha_1', 'margin_alpha_2': 'loss_quadruplet_margin_alpha_2',
           'seed': 'seed'}

FOURTH_SEED_OFFSET = 1
"""The fourth negatives' generator is seeded with --seed + this, apart from the miner's (seeded with --seed)."""


def add_flags(group):
    group.add_argument('--loss_quadruplet_margin_alpha_1', type=float, default=0.2)
    group.add_argument('--loss_quadruplet_margin_alpha_2', type=float, default=0.2)


def fourth_candidates(negatives, batch_size):
    """T x batch boolean mask; row k: the batch indices j the authors' code may take as triplet k's fourth sample.

    Their rule: the positions j of the triplets whose negative differs from triplet k's (negatives[j] !=
    negatives[k]), used as batch indices. They index the batch with a mask of the triplets' length, so their code
    runs only where the miner gives one triplet per sample (the distance miner, softhard in a batch without
    singleton classes, random, intra_random); here positions beyond the batch are never candidates.
    """
    candidates = negatives[:, None] != negatives[None, :]
    width = min(len(negatives), batch_size)
    mask = candidates.new_zeros(len(negatives), batch_size)
    mask[:, :width] = candidates[:, :width]
    return mask


class QuadrupletLoss(Criterion):
    """mean_k relu(|a_k - p_k| - |a_k - n_k| + alpha_1) + mean_{k,j} relu(|a_k - p_k| - |n_k - m_j| + alpha_2).

    As the authors' code computes it, plain Euclidean norms, and the second mean over every pair (k, j) of a triplet
    k and a fourth sample m_j (their (T, 1, D) negatives minus (T, D) fourth samples broadcast to T x T), not over
    the triplets alone. m_j, triplet j's fourth sample, is drawn uniformly from fourth_candidates(...)[j] with the
    loss's own seeded generator (kept in its state); a triplet without candidate draws none. Given tuples may bring
    the fourth samples as a fourth index tensor. Without triplets the loss is 0, without fourth samples its second
    part.
    """

    def __init__(self, margin_alpha_1=0.2, margin_alpha_2=0.2, seed=0, miner=None):
        super().__init__(miner)
        self.margin_alpha_1 = margin_alpha_1
        self.margin_alpha_2 = margin_alpha_2
        self.fourth_source = RandomSource(seed + FOURTH_SEED_OFFSET)

    def fourth_negatives(self, negatives, batch_size):
        """The fourth samples of the triplets with negatives `negatives`: one drawn for each that has a candidate."""
        candidates = fourth_candidates(negatives, batch_size)
        return uniform_choice(candidates[candidates.any(dim=1)], self.fourth_source.generator(negatives.device))

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        tuples = self.tuples(batch, labels, indices_tuple)
        anchors, positives, negatives = tuples[:3]
        fourth = tuples[3] if len(tuples) == 4 else self.fourth_negatives(negatives, len(batch))
        embeddings = batch.to(loss_dtype(batch))
        d_ap = torch.linalg.vector_norm(embeddings[anchors] - embeddings[positives], dim=1)
        d_an = torch.linalg.vector_norm(embeddings[anchors] - embeddings[negatives], dim=1)
        d_nm = torch.cdist(embeddings[negatives], embeddings[fourth], compute_mode='donot_use_mm_for_euclid_dist')
        triplet_terms = torch.relu(d_ap - d_an + self.margin_alpha_1)
        quadruplet_terms = torch.relu(d_ap[:, None] - d_nm + self.margin_alpha_2)
        return (triplet_terms.sum() / max(triplet_terms.numel(), 1)
                + quadruplet_terms.sum() / max(quadruplet_terms.numel(), 1))


LOSS = QuadrupletLoss
