"""The authors' `random` miner: as many triplets as samples, drawn without replacement from all valid triplets."""
import torch

from criteria.miners.base import Miner
from criteria.pairs import label_masks

NAME = 'random'
OPTIONS = {}


def _in_index_order(mask):
    """Row-wise column indices of the True entries of `mask` first, in increasing order."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)


def random_triplets(labels, generator=None):
    """min(len(labels), number of valid triplets) triplets (a, p, n) — p != a of a's class, n of another — drawn
    uniformly without replacement from all of them, in random order."""
    positives, negatives = label_masks(labels)
    n_positives, n_negatives = positives.sum(dim=1), negatives.sum(dim=1)
    per_anchor = n_positives * n_negatives
    total = int(per_anchor.sum())
    ranks = torch.randperm(total, generator=generator, device=labels.device)[:len(labels)]
    ends = per_anchor.cumsum(0)
    anchors = torch.searchsorted(ends, ranks, right=True)
    within = ranks - (ends - per_anchor)[anchors]
    positive_rank, negative_rank = within // n_negatives[anchors], within % n_negatives[anchors]
    positive_indices = _in_index_order(positives)[anchors, positive_rank]
    negative_indices = _in_index_order(negatives)[anchors, negative_rank]
    return anchors, positive_indices, negative_indices


class RandomMiner(Miner):
    """random_triplets, drawn from the miner's generator."""

    name = NAME

    def forward(self, embeddings, labels):
        return random_triplets(labels, generator=self.generator(embeddings.device))


MINER = RandomMiner
