"""The authors' `npair` miner: per anchor one random positive and, as negatives, every sample of the other classes."""
from criteria.miners.base import Miner
from criteria.miners.sampling import uniform_choice
from criteria.pairs import label_masks

NAME = 'npair'
OPTIONS = {}


def npair_tuples(labels, generator=None):
    """(anchors, positives, negatives): the anchors with another same-class sample, one of those drawn uniformly,
    and an anchors x batch boolean mask of their negatives (the other classes' samples)."""
    positives, negatives = label_masks(labels)
    anchors = positives.any(dim=1).nonzero(as_tuple=True)[0]
    return anchors, uniform_choice(positives[anchors], generator), negatives[anchors]


class NpairMiner(Miner):
    """npair_tuples, drawn from the miner's generator."""

    name = NAME

    def forward(self, embeddings, labels):
        return npair_tuples(labels, generator=self.generator(embeddings.device))


MINER = NpairMiner
