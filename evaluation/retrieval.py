"""Every query ranked by inner product (what the retrieval metrics read), in one of two protocols:

- leave-one-out (cub200, cars196, online_products, digits): every sample queries all other samples. A query
  never retrieves itself: it is excluded by index, so an exact duplicate of the query still counts as a neighbour.
- query/gallery (inshop, a folder with query/ and gallery/): every query is ranked against the gallery only, a
  separate set, so nothing is excluded.

A query without a same-class sample to find is a miss for Recall@K and left out of the other averages (but for the
authors' mAP variants in leave-one-out, whose normaliser counts the query itself: evaluation.metrics).

Similarities are computed a chunk of queries at a time (chunk x gallery size), never as the full matrix, so
SOP-sized test sets (60k samples) fit in memory; on the CPU by numpy's BLAS (OpenBLAS: about 1.7x torch's MKL matrix
product on AMD CPUs), on CUDA by torch.

Ties never favour the query: among equally similar samples, those of other classes rank before those of the
query's class, in every retrieval metric alike (all read the same ranks). A collapsed network (every embedding the
same, or zero) thus ranks every same-class sample last and scores near 0, never near 1. Embeddings of a healthy
network have no exact ties in practice, so the rule changes nothing there.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CHUNK_SIZE = 2048
SIMILARITY_BYTES = 2 ** 30
"""The similarity buffers of a ranking take at most this much memory: a chunk holds fewer queries where the gallery
is too large for DEFAULT_CHUNK_SIZE of them (at SOP size, 60,502 samples, 2,048 fit)."""
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


def by_numpy(tensor):
    """Whether the work on `tensor` goes through numpy (on the CPU, where numpy's BLAS, counts and sorts beat
    torch's), else torch (CUDA)."""
    return tensor.device.type == 'cpu'


def _mean_where(values, selected):
    """The mean of `values` where `selected` (nan where none is)."""
    return values[selected].double().mean().item()


def relevant_counts(labels, gallery_labels=None):
    """R of each query (N int tensor `labels`): the number of other samples of its class, or, with
    `gallery_labels`, of gallery samples of its class."""
    classes = _ClassIndex(labels if gallery_labels is None else gallery_labels)
    return classes.sizes_of(classes.class_index_of(labels)) - int(gallery_labels is None)


def rank_queries(features, labels, *, ranks=True, depth=None, chunk_size=DEFAULT_CHUNK_SIZE, gallery_features=None,
                 gallery_labels=None, ranks_below=None):
    """The Retrieval of the queries `features` (N x D tensor) under `labels` (N int tensor): with `ranks`, each
    one's best same-class rank; with a `depth`, the ranks of its same-class samples among its `depth` nearest.
    `ranks_below`: the best ranks need be exact only below it (as for Recall@K); where it is at most the depth they
    are read off the ranks within it (NO_RANK beyond), without a pass of their own.

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
    similarities = _Similarities(features, gallery_features, chunk_size)
    ranks_from_depth = ranks and with_depth and ranks_below is not None and ranks_below <= depth
    best_positive_ranks, positive_ranks = [], []
    for queries, sims in similarities.chunks():
        if leave_one_out:
            sims[torch.arange(len(queries), device=features.device), queries] = -torch.inf
        best = torch.full((len(queries),), -1, device=sims.device)  # -1: still to find
        if with_depth:
            chunk_ranks, best = _positive_ranks(sims, query_classes[queries], n_relevant[queries], classes, depth,
                                                width)
            positive_ranks.append(chunk_ranks)
        if ranks and not ranks_from_depth:
            # Those the counts among the candidates left open, by a pass over their rows (in place: last).
            rows = (best < 0).nonzero()[:, 0]
            if len(rows) == len(queries):
                best = _best_positive_rank(sims, query_classes[queries], n_relevant[queries], classes)
            elif len(rows):
                best[rows] = _best_positive_rank(sims[rows], query_classes[queries][rows],
                                                 n_relevant[queries][rows], classes)
            best_positive_ranks.append(best)
    positive_ranks = torch.cat(positive_ranks) if with_depth else None
    if ranks_from_depth:
        best_positive_ranks = [positive_ranks[:, 0] if width else torch.full_like(n_relevant, NO_RANK)]
    return Retrieval(torch.cat(best_positive_ranks) if ranks else None, positive_ranks, n_relevant, leave_one_out)


class _Similarities:
    """Inner products of chunks of queries with the whole gallery: numpy's BLAS on the CPU (its OpenBLAS sgemm is
    about 1.7x torch's on AMD CPUs and on par elsewhere), torch on CUDA."""

    def __init__(self, features, gallery_features, chunk_size):
        self.features, self.gallery = features, gallery_features
        self.on_cpu = by_numpy(features)
        fitting = SIMILARITY_BYTES // ((2 if self.on_cpu else 1) * max(len(gallery_features), 1) * 4)
        self.chunk_size = max(1, min(chunk_size, fitting))

    def chunks(self):
        """(queries, their similarities (len(queries) x M)) of each chunk of consecutive queries in turn, in one of
        two reused buffers. On the CPU a worker thread computes the next chunk's product while the caller works on
        this one (the BLAS threads compute instead of waiting: 8% off the retrieval at SOP size on two cores).
        Chunks of 2,048 queries rather than 1,024 take another 10% off there."""
        starts = range(0, len(self.features), self.chunk_size)
        buffers = [self.features.new_empty((min(self.chunk_size, len(self.features)), len(self.gallery)))
                   for _ in range(2 if self.on_cpu and len(starts) > 1 else 1)]
        if not self.on_cpu:
            for start in starts:
                queries = self.features[start:start + self.chunk_size]
                yield (torch.arange(start, start + len(queries), device=queries.device),
                       torch.matmul(queries, self.gallery.T, out=buffers[0][:len(queries)]))
            return
        with ThreadPoolExecutor(1) as worker:
            pending = worker.submit(self._product, starts[0], buffers[0])
            for turn, start in enumerate(starts):
                sims = pending.result()
                if turn + 1 < len(starts):
                    pending = worker.submit(self._product, starts[turn + 1], buffers[(turn + 1) % len(buffers)])
                yield torch.arange(start, start + len(sims)), sims

    def _product(self, start, buffer):
        queries = self.features[start:start + self.chunk_size].numpy()
        out = buffer[:len(queries)]
        np.matmul(queries, self.gallery.numpy().T, out=out.numpy())
        return out


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


def _positive_ranks(sims, query_classes, n_relevant, classes, depth, width):
    """((Q x width) int64, ascending: the 0-based ranks of each query's same-class samples among its `depth` nearest,
    NO_RANK for the rest and beyond its R; (Q) int64: the rank of its most similar one at any depth where the counts
    give it, -1 where they do not). Among equally similar samples the other-class ones come first (ties never favour
    the query).

    Counted, not sorted: the j-th most similar same-class sample (from 0, similarity p) is preceded by the j before it
    and by every other-class sample at least as similar, i.e. by (samples >= p) - (same-class samples >= p) + j.
    Short of whole rows, the counts run over each row's candidates (_candidates: every value above a floor).
    """
    if width == 0:
        return torch.full((len(sims), 0), NO_RANK, device=sims.device), torch.full((len(sims),), NO_RANK,
                                                                                   device=sims.device)
    positives, valid = classes.same_class_samples(query_classes)
    # Leave-one-out: the query's own entry in `sims` is -inf, so it sorts last and falls beyond its R.
    similar = sims.gather(1, positives).masked_fill_(~valid, -torch.inf).sort(dim=1, descending=True).values
    similar = torch.nn.functional.pad(similar, (0, max(0, width - similar.shape[1])), value=-torch.inf)
    similar = similar[:, :width].contiguous()
    order = torch.arange(width, device=sims.device)
    beyond = order >= n_relevant[:, None]
    candidates, floor = _candidates(sims, depth) if depth < sims.shape[1] else ([sims], None)
    at_least = _count_at_least(candidates, similar, n_relevant)
    if floor is not None:
        # Outside the candidates every value is at most the floor: a same-class similarity above it is counted in
        # full, one on it misses the values equal to the floor outside, counted here, one below is `depth` or more back.
        on_floor = (similar == floor[:, None]) & ~beyond
        rows = on_floor.any(1).nonzero()[:, 0]
        if len(rows):
            outside = _count_equal(sims[rows], floor[rows]) - sum(_count_equal(part[rows], floor[rows])
                                                                  for part in candidates)
            at_least[rows] += on_floor[rows] * outside[:, None]
        beyond |= similar < floor[:, None]
    same_class_at_least = width - torch.searchsorted(similar.flip(1).contiguous(), similar)
    ranks = at_least - same_class_at_least + order
    # The best rank, exact at any depth where the most similar same-class sample is not below the floor (-1 else).
    best = torch.where(beyond[:, 0] & (n_relevant > 0), -1, ranks[:, 0]).masked_fill_(n_relevant == 0, NO_RANK)
    return ranks.masked_fill_(beyond | (ranks >= depth), NO_RANK), best


def _count_at_least(parts, thresholds, n_relevant):
    """(Q x W) int64: how many entries of each row of the `parts` (Q x C_i each, a row's candidates in pieces) are >=
    each of its thresholds (Q x W), for the first R thresholds of each row (0 for the rest, which no rank reads).

    A counting pass per threshold for a few (numpy's count is 8x torch's on the CPU), over the rows it concerns (the
    rows in decreasing R, so that threshold j concerns a leading block of them); else a sort and a search."""
    n_rows, n_thresholds = thresholds.shape
    if n_thresholds > 32:
        counts = 0
        for part in parts:  # numpy's sort is 5x torch's on the CPU
            ordered = (torch.from_numpy(np.sort(part.numpy(), axis=1)) if by_numpy(part)
                       else part.sort(dim=1).values)
            counts = counts + part.shape[1] - torch.searchsorted(ordered, thresholds)
        return counts
    rows = torch.argsort(n_relevant, descending=True, stable=True)
    concerned = (n_relevant[rows][None, :] > torch.arange(n_thresholds, device=rows.device)[:, None]).sum(1).tolist()
    counts = torch.zeros((n_rows, n_thresholds), dtype=torch.int64, device=thresholds.device)
    on_cpu = by_numpy(thresholds)
    by_rows = thresholds[rows]
    for part in parts:
        part = part[rows]
        if on_cpu:
            part_np, by_rows_np, counts_np = part.numpy(), by_rows.numpy(), counts.numpy()
        for j, n in enumerate(concerned):
            if on_cpu:
                counts_np[:n, j] += np.count_nonzero(part_np[:n] >= by_rows_np[:n, j, None], axis=1)
            else:
                counts[:n, j] += (part[:n] >= by_rows[:n, j, None]).sum(1)
    return torch.empty_like(counts).index_copy_(0, rows, counts)


def _count_equal(values, value):
    """(Q) int64: how many entries of each row of `values` (Q x C) equal its `value` (Q)."""
    if by_numpy(values):
        return torch.from_numpy(np.count_nonzero(values.numpy() == value.numpy()[:, None], axis=1).astype(np.int64))
    return (values == value[:, None]).sum(1)


def _candidates(sims, k):
    """(candidates, floor (Q)): `candidates`, a list of (Q x C_i) pieces, are entries of each row of `sims` among
    which lie all of its entries above its floor, a value at most its k-th largest (-inf where the candidates are the
    whole row).

    The rows are cut into blocks of columns: every entry outside a row's k blocks of the largest maxima is at most
    each of those k maxima, so at most the smallest of them, the floor. Blocks of 64 adjacent columns where there
    are many of them, else strided blocks of a few (at SOP size 14x and 8x fewer columns for the depths of MAP@R and
    mAP_lim); the columns left over at the end are candidates too.
    """
    n_rows, n_columns = sims.shape
    if n_columns >= 256 * k:
        block, strided = 64, False
    elif n_columns >= 16 * k:
        block, strided = n_columns // (8 * k), True
    else:
        return [sims], sims.new_full((n_rows,), -torch.inf)
    n_blocks = n_columns // block
    whole = sims[:, :n_blocks * block]
    blocks = whole.view(n_rows, block, n_blocks) if strided else whole.view(n_rows, n_blocks, block)
    chosen, floor = _largest(blocks.amax(1 if strided else 2), k)
    if strided:  # block b holds the columns b, b + n_blocks, b + 2 n_blocks, ...
        chosen = blocks.gather(2, chosen[:, None, :].expand(n_rows, block, k))
    else:
        chosen = blocks.gather(1, chosen[:, :, None].expand(n_rows, k, block))
    candidates = [chosen.view(n_rows, -1)]
    if n_columns > n_blocks * block:
        candidates.append(sims[:, n_blocks * block:])
    return candidates, floor


def _largest(values, k):
    """(indices (Q x k) of k of the largest entries of each row of `values`, among them all above its k-th largest;
    that k-th largest (Q)). On the CPU numpy's partition finds the k-th largest (0.6x topk's time) and the entries
    at least as large are taken where a row has exactly k of them (no tie at the k-th), topk on the other rows."""
    if not by_numpy(values):
        top = values.topk(k, dim=1, sorted=False)
        return top.indices, top.values.amin(1)
    values_np = values.numpy()
    kth = np.partition(values_np, values_np.shape[1] - k, axis=1)[:, values_np.shape[1] - k]
    at_least = values_np >= kth[:, None]
    untied = np.count_nonzero(at_least, axis=1) == k
    if untied.all():
        indices = (np.flatnonzero(at_least) % values_np.shape[1]).reshape(-1, k)
    else:
        indices = np.empty((len(values_np), k), dtype=np.int64)
        indices[untied] = (np.flatnonzero(at_least[untied]) % values_np.shape[1]).reshape(-1, k)
        tied = np.flatnonzero(~untied)
        indices[tied] = values[torch.from_numpy(tied)].topk(k, dim=1, sorted=False).indices.numpy()
    return torch.from_numpy(indices), torch.from_numpy(kth)
