"""Histogram loss (Ustinova & Lempitsky, NeurIPS 2016), as the authors' criteria/histogram.py computes it."""
import torch

from criteria.base import Criterion, loss_dtype

NAME = 'histogram'
KIND = 'pair'
MINERS = ()
OPTIONS = {'nbins': 'loss_histogram_nbins'}


def add_flags(group):
    group.add_argument('--loss_histogram_nbins', type=int, default=65,
                       help='Nodes of the histograms of similarities, spread evenly over [-1, 1].')


def similarity_histogram(similarities, nbins):
    """The linearly interpolated histogram of `similarities` on `nbins` nodes t_r = -1 + r * w (w = 2 / (nbins -
    1)), normalised by their count: a value s in [t_r, t_r+1) gives (t_r+1 - s) / w to node r and (s - t_r) / w to
    node r + 1. r is (s + 1) / w truncated toward zero, as the authors' numpy cast; values beyond the nodes count
    nowhere."""
    width = 2.0 / (nbins - 1)
    lower = torch.trunc((similarities.detach() + 1) / width)
    nodes = torch.cat([lower, lower + 1]).long()
    weights = torch.cat([((lower + 1) * width - 1 - similarities) / width,
                         (similarities + 1 - lower * width) / width])
    inside = (nodes >= 0) & (nodes < nbins)
    histogram = similarities.new_zeros(nbins).index_add(0, nodes[inside], weights[inside])
    return histogram / len(similarities)


class HistogramLoss(Criterion):
    """sum_r h_neg[r] * (h_pos[0] + ... + h_pos[r]): the probability that a negative pair is more similar than a
    positive one, from the histograms (similarity_histogram) of the dot products of the batch's positive and negative
    pairs, each unordered pair once. A batch without positive or without negative pairs gives 0 (the authors' gives
    nan)."""

    def __init__(self, nbins=65):
        super().__init__()
        if nbins < 2:
            raise ValueError(f'the histogram loss needs at least 2 nodes, got nbins={nbins}')
        self.nbins = nbins

    def forward(self, batch, labels, teacher_batch=None, epoch=0, indices_tuple=None):
        embeddings = batch.to(loss_dtype(batch))
        first, second = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
        similarities = (embeddings[first] * embeddings[second]).sum(dim=1)
        same = labels[first] == labels[second]
        if same.all() or not same.any():
            return embeddings.sum() * 0
        positive = similarity_histogram(similarities[same], self.nbins)
        negative = similarity_histogram(similarities[~same], self.nbins)
        return (negative * positive.cumsum(0)).sum()


LOSS = HistogramLoss
