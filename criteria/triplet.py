"""Triplet loss with semi-hard mining."""
import torch

from criteria.base import Criterion, loss_dtype
from criteria.distances import pair_distances
from criteria.miners import semihard_triplets


class TripletLoss(Criterion):
    """Mean of relu(d_ap - d_an + margin) over semi-hard triplets (Euclidean distances); 0 if none."""

    def __init__(self, margin=0.2):
        super().__init__()
        self.margin = margin

    def forward(self, batch, labels, teacher_batch=None, epoch=0):
        anchors, positives, negatives = semihard_triplets(batch, labels, self.margin)
        return self.loss_for_triplets(batch, anchors, positives, negatives)

    def loss_for_triplets(self, batch, anchors, positives, negatives):
        """The triplet loss over the given triplets (index tensors into the batch)."""
        embeddings = batch.to(loss_dtype(batch))
        terms = torch.relu(pair_distances(embeddings, anchors, positives)
                           - pair_distances(embeddings, anchors, negatives) + self.margin)
        return terms.sum() / max(len(terms), 1)
