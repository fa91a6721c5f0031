"""The authors' `lifted` miner: every anchor with its whole positive and negative sets."""
from criteria.miners.base import Miner
from criteria.pairs import label_masks

NAME = 'lifted'
OPTIONS = {}


def lifted_tuples(labels):
    """(anchors, positives, negatives): the anchors with another same-class sample, and anchors x batch boolean
    masks of their positives (the other same-class samples) and negatives (the other classes' samples)."""
    positives, negatives = label_masks(labels)
    anchors = positives.any(dim=1).nonzero(as_tuple=True)[0]
    return anchors, positives[anchors], negatives[anchors]


class LiftedMiner(Miner):
    """lifted_tuples (nothing random)."""

    name = NAME

    def forward(self, embeddings, labels):
        return lifted_tuples(labels)


MINER = LiftedMiner
