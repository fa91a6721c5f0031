"""Every query ranked by inner product (what the retrieval metrics read), in one of two protocols:

- leave-one-out (cub200, cars196, online_products, digits): every sample queries all other samples. A query
  never retrieves itself: it is excluded by index, so an exact duplicate of the query still counts as a neighbour.
- query/gallery (inshop, a folder with query/ and gallery/): every query is ranked against the gallery only, a
  separate set, so nothing is excluded. A query whose class has no gallery image is a miss for Recall@K and left
  out of the MAP averages.

Similarities are computed a chunk of queries at a time (chunk x gallery size), never as the full matrix, so
SOP-sized test sets (60k samples) fit in memory.

Ties never favour the query: among equally similar samples, those of other classes rank before those of the
query's class, in Recall@K and in the MAP metrics alike. A collapsed network (every embedding the same, or zero)
thus ranks every same-class sample last and scores near 0, never near 1. Embeddings of a healthy network have no
exact ties in practice, so the rule changes nothing there.
"""
from dataclasses import dataclass

import torch

DEFAULT_CHUNK_SIZE = 1024


@dataclass
class Retrieval:
    """What one ranking of every query gives the metrics (evaluation.metrics reads them):
    best_positive_rank: (Q) int64, the 0-based rank of each query's most similar same-class sample (int64 max where
      it has none), or None where no metric reads it;
    precisions_at_hits: (Q x depth) float64, precision@i at the positions i among the depth nearest where a
      same-class sample is, else 0;
    n_relevant: (Q) int64, R: the number of same-class samples there are to find."""
    best_positive_rank: torch.Tensor
    precisions_at_hits: torch.Tensor
    n_relevant: torch.Tensor

    def recall_at(self, k):
        """The fraction of queries with a same-class sample among their k nearest."""
        return (self.best_positive_rank < k).double().mean().item()

    def mean_average_precision(self, normaliser, cutoff):
        """Mean over the queries with normaliser > 0 of (the sum of their precisions at hits within the `cutoff`
        nearest) / normaliser (nan when no query has one); `normaliser` (Q), `cutoff` (Q) or a number."""
        positions = torch.arange(self.precisions_at_hits.shape[1], device=self.precisions_at_hits.device)
        cutoff = torch.as_tensor(cutoff, device=positions.device)
        within_cutoff = positions < (cutoff[:, None] if cutoff.ndim else cutoff)
        average_precision = (self.precisions_at_hits * within_cutoff).sum(1) / normaliser
        return average_precision[normaliser > 0].mean().item()


def relevant_counts(labels, gallery_labels=None):
    """R of each query (N int tensor `labels`): the number of other samples of its class, or, with
    `gallery_labels`, of gallery samples of its class."""
    classes = _ClassIndex(labels if gallery_labels is None else gallery_labels)
    return classes.sizes_of(classes.class_index_of(labels)) - int(gallery_labels is None)


def rank_queries(features, labels, *, ranks=True, depth=None, chunk_size=DEFAULT_CHUNK_SIZE, gallery_features=None,
                 gallery_labels=None):
    """The Retrieval of the queries `features` (N x D tensor) under `labels` (N int tensor): with `ranks`, each
    one's best same-class rank; with a `depth`, the precisions at hits among its `depth` nearest.

    Without a gallery each query is ranked against the other queries (leave-one-out); with `gallery_features`
    (M x D) and `gallery_labels` (M) against the gallery alone.
    """
    leave_one_out = gallery_features is None
    if leave_one_out:
        gallery_features, gallery_labels = features, labels
    classes = _ClassIndex(gallery_labels)
    query_classes = classes.class_index_of(labels)
    n_relevant = classes.sizes_of(query_classes) - int(leave_one_out)
    n_queries, n_gallery = len(features), len(gallery_features)
    hits = depth is not None
    depth = min(depth or 0, n_gallery - int(leave_one_out))
    sims_buffer = features.new_empty((min(chunk_size, n_queries), n_gallery))
    best_positive_ranks, precisions_at_hits = [], []
    for start in range(0, n_queries, chunk_size):
        queries = torch.arange(start, min(start + chunk_size, n_queries), device=features.device)
        sims = torch.matmul(features[queries], gallery_features.T, out=sims_buffer[:len(queries)])
        if leave_one_out:
            sims[torch.arange(len(queries), device=features.device), queries] = -torch.inf
        if hits:
            precisions_at_hits.append(_precisions_at_hits(sims, query_classes[queries], classes, depth))
        if ranks:  # last: it overwrites `sims`
            best_positive_ranks.append(_best_positive_rank(sims, query_classes[queries], n_relevant[queries],
                                                           classes))
    return Retrieval(torch.cat(best_positive_ranks) if ranks else None,
                     torch.cat(precisions_at_hits) if hits else None, n_relevant)


class _ClassIndex:
    """The gallery grouped by class: which gallery samples share a query's class, and how many there are."""

    def __init__(self, labels):
        self.labels, self.class_of, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
        self.members = torch.argsort(self.class_of, stable=True)
        self.class_start = torch.cumsum(class_sizes, 0) - class_sizes
        self.class_size = class_sizes

    def class_index_of(self, labels):
        """The gallery class index of each of `labels`; -1 for a label the gallery does not have."""
        found = torch.searchsorted(self.labels, labels).clamp_max(len(self.labels) - 1)
        return torch.where(self.labels[found] == labels, found, -1)

    def sizes_of(self, query_classes):
        """The gallery size of each query class (0 for -1)."""
        return torch.where(query_classes >= 0, self.class_size[query_classes.clamp_min(0)], 0)

    def same_class_samples(self, query_classes):
        """(Q x W) gallery indices of each query class's members, and which are real (none for -1)."""
        sizes = self.sizes_of(query_classes)
        offsets = torch.arange(max(int(sizes.max()), 1), device=query_classes.device)
        valid = offsets < sizes[:, None]
        slots = self.class_start[query_classes.clamp_min(0)][:, None] + offsets
        return self.members[slots.clamp_max(len(self.members) - 1)], valid


def _best_positive_rank(sims, query_classes, n_relevant, classes):
    """0-based rank of each query's most similar same-class sample (int64 max when it has none), every other-class
    sample as similar as it ranking before it (ties never favour the query).

    Overwrites `sims` with 0/1 flags: counting in place is several times faster on the CPU than
    summing a separate bool tensor.
    """
    positives, valid = classes.same_class_samples(query_classes)
    # Leave-one-out: the query's own entry in `sims` is -inf, so including it among the positives is harmless.
    positive_sims = sims.gather(1, positives).masked_fill(~valid, -torch.inf)
    best_positive = positive_sims.amax(1, keepdim=True)
    tied_positives = (positive_sims == best_positive).logical_and_(valid).sum(1)
    ranks = sims.ge_(best_positive).sum(1).long() - tied_positives
    return ranks.masked_fill(n_relevant == 0, torch.iinfo(torch.int64).max)


def _precisions_at_hits(sims, query_classes, classes, depth):
    """(Q x depth) float64: precision@i at the positions i where a same-class sample is, else 0; among equally
    similar samples the other-class ones come first (ties never favour the query).

    float32 topk finds the `depth` nearest; only they are then ordered with same-class samples after equal
    other-class ones. Ties at the last similarity taken (the boundary) may reach beyond the depth: in those rows
    alone (none, in practice, for a healthy network) the other-class samples of the whole row fill the group
    first, counted from the row and from the query's class.
    """
    if depth == 0:
        return sims.new_zeros((len(sims), 0), dtype=torch.float64)
    beyond = depth < sims.shape[1]  # one more than the depth says which rows have ties beyond it
    values, indices = sims.topk(depth + beyond, dim=1)
    crossing = (values[:, depth] == values[:, depth - 1]).nonzero()[:, 0] if beyond else values.new_empty(0).long()
    values, indices = values[:, :depth], indices[:, :depth]
    is_hit = classes.class_of[indices] == query_classes[:, None]
    # Within the nearest: equal values keep their order, hits after the rest (a stable sort on hit, then value).
    by_hit = torch.sort(is_hit.to(torch.int8), dim=1, stable=True).indices
    by_value = torch.sort(values.gather(1, by_hit), dim=1, descending=True, stable=True).indices
    is_hit = is_hit.gather(1, by_hit.gather(1, by_value))
    boundary = values[:, -1:]
    in_group = (values == boundary).sum(1)
    tied_others = (values == boundary).logical_and_(~is_hit).sum(1)
    if len(crossing):  # the boundary group reaches beyond the depth: count its other-class samples in the row
        positives, valid = classes.same_class_samples(query_classes[crossing])
        rows, row_boundary = sims[crossing], boundary[crossing]
        tied_positives = (rows.gather(1, positives) == row_boundary).logical_and_(valid).sum(1)
        tied_others[crossing] = (rows == row_boundary).sum(1) - tied_positives
    group_position = torch.arange(depth, device=sims.device) - (depth - in_group)[:, None]
    boundary_hit = group_position >= torch.minimum(in_group, tied_others)[:, None]
    is_hit = torch.where(group_position >= 0, boundary_hit, is_hit)
    hits_so_far = is_hit.cumsum(1, dtype=torch.float64)
    positions = torch.arange(1, depth + 1, device=sims.device, dtype=torch.float64)
    return hits_so_far / positions * is_hit
