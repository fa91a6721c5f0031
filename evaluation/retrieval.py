"""Every query ranked by inner product (what the retrieval metrics read), in one of two protocols:

- leave-one-out (cub200, cars196, online_products, digits): every sample queries all other samples. A query
  never retrieves itself: it is excluded by index, so an exact duplicate of the query still counts as a neighbour.
- query/gallery (inshop, a folder with query/ and gallery/): every query is ranked against the gallery only, a
  separate set, so nothing is excluded. A query whose class has no gallery image is a miss for Recall@K and left
  out of the MAP averages.

Similarities are computed a chunk of queries at a time (chunk x gallery size), never as the full matrix, so
SOP-sized test sets (60k samples) fit in memory; on the CPU by numpy's BLAS (OpenBLAS: about 1.7x torch's MKL matrix
product on AMD CPUs), on CUDA by torch.

Ties never favour the query: among equally similar samples, those of other classes rank before those of the
query's class, in Recall@K and in the MAP metrics alike. A collapsed network (every embedding the same, or zero)
thus ranks every same-class sample last and scores near 0, never near 1. Embeddings of a healthy network have no
exact ties in practice, so the rule changes nothing there.
"""
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CHUNK_SIZE = 1024
NO_RANK = torch.iinfo(torch.int64).max
"""The rank of a same-class sample there is none of, or that lies beyond the depth ranked."""


@dataclass
class Retrieval:
    """What one ranking of every query gives the metrics (evaluation.metrics reads them):
    best_positive_rank: (Q) int64, the 0-based rank of each query's most similar same-class sample (NO_RANK where it
      has none), or None where no metric reads it;
    positive_ranks: (Q x W) int64, ascending, the 0-based ranks of its same-class samples among its `depth` nearest
      (NO_RANK for the rest; W = min(depth, largest R)), or None where no metric reads them;
    n_relevant: (Q) int64, R: the number of same-class samples there are to find;
    leave_one_out: whether each query was ranked against the other queries (else against a separate gallery).
    Ranks follow the tie rule: among equally similar samples the other-class ones come first."""
    best_positive_rank: torch.Tensor
    positive_ranks: torch.Tensor
    n_relevant: torch.Tensor
    leave_one_out: bool = True

    @property
    def class_size(self):
        """(Q) int64: the size of each query's class in the set it searches, the query itself included where it is
        part of it (leave-one-out: R + 1; query/gallery: R), the authors' normaliser of their mAP metrics."""
        return self.n_relevant + int(self.leave_one_out)

    def recall_at(self, k):
        """The fraction of queries with a same-class sample among their k nearest."""
        return (self.best_positive_rank < k).double().mean().item()

    def mean_reciprocal_rank(self):
        """Mean over the queries with a same-class sample of 1 / (1 + the rank of the first), nan without any."""
        return _mean_where(1 / (self.best_positive_rank.double() + 1), self.n_relevant > 0)

    def hits_within(self, cutoff):
        """(Q) float64: how many same-class samples each query finds among its `cutoff` nearest (a number or (Q))."""
        return self._within(cutoff).sum(1, dtype=torch.float64)

    def mean_average_precision(self, normaliser, cutoff):
        """Mean over the queries with normaliser > 0 of (the sum of their precisions at hits within the `cutoff`
        nearest) / normaliser (nan when no query has one); `normaliser` (Q), `cutoff` (Q) or a number (math.inf: all).
        The j-th same-class sample (from 1) at 0-based rank r adds precision j / (r + 1)."""
        ranks = self.positive_ranks
        within = self._within(cutoff)
        found = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
        precisions = within * found / (torch.where(within, ranks, 0) + 1)
        return _mean_where(precisions.sum(1) / normaliser, normaliser > 0)

    def mean_where_relevant(self, values):
        """Mean of the per-query `values` over the queries with a same-class sample (nan without any)."""
        return _mean_where(values, self.n_relevant > 0)

    def _within(self, cutoff):
        """(Q x W) bool: which same-class samples lie among the `cutoff` nearest of their query."""
        ranks = self.positive_ranks
        cutoff = torch.as_tensor(cutoff, device=ranks.device)
        return (ranks < (cutoff[:, None] if cutoff.ndim else cutoff)) & (ranks != NO_RANK)


def _mean_where(values, selected):
    """The mean of `values` where `selected` (nan where none is)."""
    return values[selected].double().mean().item()


def relevant_counts(labels, gallery_labels=None):
    """R of each query (N int tensor `labels`): the number of other samples of its class, or, with
    `gallery_labels`, of gallery samples of its class."""
    classes = _ClassIndex(labels if gallery_labels is None else gallery_labels)
    return classes.sizes_of(classes.class_index_of(labels)) - int(gallery_labels is None)


def rank_queries(features, labels, *, ranks=True, depth=None, chunk_size=DEFAULT_CHUNK_SIZE, gallery_features=None,
                 gallery_labels=None):
    """The Retrieval of the queries `features` (N x D tensor) under `labels` (N int tensor): with `ranks`, each
    one's best same-class rank; with a `depth`, the ranks of its same-class samples among its `depth` nearest.

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
    with_depth = depth is not None
    depth = min(depth or 0, n_gallery - int(leave_one_out))
    width = min(depth, int(n_relevant.max()) if n_queries else 0)
    whole_rows = depth == n_gallery - int(leave_one_out)  # every sample ranked: count instead of sorting
    similarities = _Similarities(features, gallery_features, min(chunk_size, n_queries))
    best_positive_ranks, positive_ranks = [], []
    for start in range(0, n_queries, chunk_size):
        queries = torch.arange(start, min(start + chunk_size, n_queries), device=features.device)
        sims = similarities.of(queries)
        if leave_one_out:
            sims[torch.arange(len(queries), device=features.device), queries] = -torch.inf
        if with_depth and whole_rows:
            positive_ranks.append(_all_positive_ranks(sims, query_classes[queries], n_relevant[queries], classes,
                                                      width))
        elif with_depth:
            positive_ranks.append(_positive_ranks(sims, query_classes[queries], classes, depth, width))
        if ranks:  # last: it overwrites `sims`
            best_positive_ranks.append(_best_positive_rank(sims, query_classes[queries], n_relevant[queries],
                                                           classes))
    return Retrieval(torch.cat(best_positive_ranks) if ranks else None,
                     torch.cat(positive_ranks) if with_depth else None, n_relevant, leave_one_out)


class _Similarities:
    """Inner products of chunks of queries with the whole gallery, into one reused buffer: numpy's BLAS on the CPU
    (its OpenBLAS sgemm is about 1.7x torch's on AMD CPUs and on par elsewhere), torch on CUDA."""

    def __init__(self, features, gallery_features, chunk_size):
        self.features, self.gallery = features, gallery_features
        self.buffer = features.new_empty((chunk_size, len(gallery_features)))
        self.on_cpu = features.device.type == 'cpu'
        if self.on_cpu:
            self.features_np, self.gallery_np = features.numpy(), gallery_features.numpy()

    def of(self, queries):
        """(len(queries) x M) similarities of the consecutive `queries` (a tensor of indices)."""
        out = self.buffer[:len(queries)]
        if self.on_cpu:
            np.matmul(self.features_np[int(queries[0]):int(queries[-1]) + 1], self.gallery_np.T, out=out.numpy())
            return out
        return torch.matmul(self.features[queries], self.gallery.T, out=out)


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
    return ranks.masked_fill(n_relevant == 0, NO_RANK)


def _all_positive_ranks(sims, query_classes, n_relevant, classes, width):
    """(Q x width) int64, ascending: the 0-based rank among all candidates of each query's same-class samples
    (NO_RANK beyond its R), counted: the j-th most similar one (from 0, similarity p) is preceded by the j before it
    and by every other-class sample at least as similar as p (ties never favour the query), i.e. by
    (samples >= p) - (same-class samples >= p) + j. One counting pass per same-class sample instead of sorting rows.
    """
    positives, valid = classes.same_class_samples(query_classes)
    # Leave-one-out: the query's own entry in `sims` is -inf, so it sorts last and is dropped with the columns >= R.
    similar = sims.gather(1, positives).masked_fill_(~valid, -torch.inf).sort(dim=1, descending=True).values
    similar = torch.nn.functional.pad(similar, (0, max(0, width - similar.shape[1])), value=-torch.inf)[:, :width]
    at_least = torch.stack([_count_at_least(sims, similar[:, j]) for j in range(width)], 1)
    same_class_at_least = (similar[:, None, :] >= similar[:, :, None]).sum(2)
    ranks = at_least - same_class_at_least + torch.arange(width, device=sims.device)
    return ranks.masked_fill_(torch.arange(width, device=sims.device) >= n_relevant[:, None], NO_RANK)


def _count_at_least(sims, thresholds):
    """(Q) int64: how many entries of each row of `sims` are >= its threshold (numpy's count is 8x torch's on CPUs)."""
    if sims.device.type == 'cpu':
        counts = np.count_nonzero(sims.numpy() >= thresholds.numpy()[:, None], axis=1)
        return torch.from_numpy(counts.astype(np.int64))
    return (sims >= thresholds[:, None]).sum(1)


def _positive_ranks(sims, query_classes, classes, depth, width):
    """(Q x width) int64, ascending: the 0-based ranks of each query's same-class samples among its `depth` nearest,
    NO_RANK for the rest; among equally similar samples the other-class ones come first (ties never favour the query).

    The `depth` nearest are found by _nearest (float32 values, as the similarities); only they are then ordered with
    same-class samples after equal other-class ones. Ties at the last similarity taken (the boundary) may reach
    beyond the depth: in those rows alone (none, in practice, for a healthy network) the other-class samples of the
    whole row fill the group first, counted from the row and from the query's class.
    """
    if depth == 0:
        return torch.full((len(sims), 0), NO_RANK, device=sims.device)
    beyond = depth < sims.shape[1]  # one more than the depth says which rows have ties beyond it
    values, indices = _nearest(sims, depth + beyond)
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
    # The j-th hit of a row (from 0) at position p: its rank p in column j.
    rows, positions = is_hit.nonzero(as_tuple=True)
    found = is_hit.cumsum(1)[rows, positions] - 1
    ranks = torch.full((len(sims), width), NO_RANK, device=sims.device)
    keep = found < width
    ranks[rows[keep], found[keep]] = positions[keep]
    return ranks


def _nearest(sims, k):
    """The k largest values of each row of `sims`, in descending order, and their columns (as torch.topk: the values
    exactly; among values equal to the k-th, any of them).

    torch.topk is slow on the CPU, so it runs on a few candidates: the rows are cut into blocks of columns, and a
    row's k largest values all lie in its k blocks of the largest maxima (every value outside them is at most each of
    those k maxima), plus the columns left over at the end. Blocks of 64 adjacent columns where there are many of
    them (4x faster than topk for the depth of MAP@R at SOP size), else strided blocks of a few (2x for depth 1,000).
    """
    n_rows, n_columns = sims.shape
    if n_columns >= 256 * k:
        block, strided = 64, False
    elif n_columns >= 16 * k:
        block, strided = n_columns // (8 * k), True
    else:
        return sims.topk(k, dim=1)
    n_blocks = n_columns // block
    whole = sims[:, :n_blocks * block]
    if strided:  # block b holds the columns b, b + n_blocks, b + 2 n_blocks, ...
        maxima = whole.view(n_rows, block, n_blocks).amax(1)
        offsets = torch.arange(block, device=sims.device) * n_blocks
        first = maxima.topk(k, dim=1, sorted=False).indices
    else:
        maxima = whole.view(n_rows, n_blocks, block).amax(2)
        offsets = torch.arange(block, device=sims.device)
        first = maxima.topk(k, dim=1, sorted=False).indices * block
    columns = (first[:, :, None] + offsets).view(n_rows, -1)
    if n_columns > n_blocks * block:
        rest = torch.arange(n_blocks * block, n_columns, device=sims.device)
        columns = torch.cat([columns, rest.expand(n_rows, -1)], 1)
    top = sims.gather(1, columns).topk(k, dim=1)
    return top.values, columns.gather(1, top.indices)
