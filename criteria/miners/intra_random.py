"""The authors' `intra_random` miner: as many triplets as samples, all three members of each from one class."""
import torch

from criteria.miners.base import Miner

NAME = 'intra_random'
OPTIONS = {}


def intra_random_triplets(labels, generator=None):
    """len(labels) triplets: each takes a class uniformly among the batch's classes, then anchor, positive and
    negative uniformly, with replacement, among that class's samples (so the 'negative' shares the class)."""
    classes = labels.unique()
    drawn = classes[torch.randint(len(classes), (len(labels),), generator=generator, device=labels.device)]
    members = (drawn[:, None] == labels[None, :]).to(torch.float64)
    anchors, positives, negatives = torch.multinomial(members, 3, replacement=True, generator=generator).unbind(1)
    return anchors, positives, negatives


class IntraRandomMiner(Miner):
    """intra_random_triplets, drawn from the miner's generator."""

    name = NAME

    def forward(self, embeddings, labels):
        return intra_random_triplets(labels, generator=self.generator(embeddings.device))


MINER = IntraRandomMiner
