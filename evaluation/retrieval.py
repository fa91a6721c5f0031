"""Retrieval metrics: every sample queries all other samples, ranked by inner product.

Similarities are computed a chunk of queries at a time (chunk x N), never as the full N x N
matrix, so SOP-sized test sets (60k samples) fit in memory. A query never retrieves itself: it
is excluded by index, so an exact duplicate of the query still counts as a neighbour.

Ties: Recall@K ranks the best same-class sample by the number of samples strictly more similar,
so ties are resolved in the query's favour; the MAP metrics take torch.topk's order among ties.
Embeddings from a network have no exact ties in practice.
"""
import torch

DEFAULT_CHUNK_SIZE = 1024


def retrieval_metrics(features, labels, *, recall_ks=(), map_at_r=False, map_ks=(),
                      chunk_size=DEFAULT_CHUNK_SIZE):
    """Recall@K, MAP@R and MAP@K of `features` (N x D tensor) under `labels` (N int tensor).

    Returns {'e_recall@K': ..., 'mAP@R': ..., 'mAP@K': ...} for the requested K. A query whose
    class has no other sample is a miss for Recall@K and left out of the MAP averages
    (MAP is nan when no query has a same-class sample).
    """
    classes = _ClassIndex(labels)
    n_samples = len(features)
    map_depth = min(max([*map_ks, *([classes.max_relevant] if map_at_r else [])], default=0),
                    n_samples - 1)
    sims_buffer = features.new_empty((min(chunk_size, n_samples), n_samples))
    best_positive_ranks, precisions_at_hits = [], []
    for start in range(0, n_samples, chunk_size):
        queries = torch.arange(start, min(start + chunk_size, n_samples), device=features.device)
        sims = torch.matmul(features[queries], features.T, out=sims_buffer[:len(queries)])
        sims[torch.arange(len(queries), device=features.device), queries] = -torch.inf
        if map_at_r or map_ks:
            precisions_at_hits.append(_precisions_at_hits(sims, queries, classes, map_depth))
        if recall_ks:  # last: it overwrites `sims`
            best_positive_ranks.append(_best_positive_rank(sims, queries, classes))

    results = {}
    if recall_ks:
        ranks = torch.cat(best_positive_ranks)
        for k in recall_ks:
            results[f'e_recall@{k}'] = (ranks < k).double().mean().item()
    if map_at_r or map_ks:
        precisions = torch.cat(precisions_at_hits)
        n_relevant = classes.n_relevant
        if map_at_r:
            results['mAP@R'] = _mean_average_precision(precisions, n_relevant, n_relevant)
        for k in map_ks:
            results[f'mAP@{k}'] = _mean_average_precision(
                precisions, n_relevant.clamp_max(k), torch.full_like(n_relevant, k))
    return results


class _ClassIndex:
    """Samples grouped by class: which samples share a query's class, and how many."""

    def __init__(self, labels):
        _, self.class_of, class_sizes = torch.unique(labels, return_inverse=True,
                                                     return_counts=True)
        self.members = torch.argsort(self.class_of, stable=True)
        self.class_start = torch.cumsum(class_sizes, 0) - class_sizes
        self.class_size = class_sizes
        self.n_relevant = class_sizes[self.class_of] - 1
        self.max_relevant = int(self.n_relevant.max())

    def same_class_samples(self, queries):
        """(Q x W) indices of each query's class members (self included), and which are real."""
        sizes = self.class_size[self.class_of[queries]]
        offsets = torch.arange(int(sizes.max()), device=queries.device)
        valid = offsets < sizes[:, None]
        slots = self.class_start[self.class_of[queries]][:, None] + offsets
        return self.members[slots.clamp_max(len(self.members) - 1)], valid


def _best_positive_rank(sims, queries, classes):
    """0-based rank of each query's most similar same-class sample (int64 max when it has none).

    Overwrites `sims` with 0/1 flags: counting in place is several times faster on the CPU than
    summing a separate bool tensor.
    """
    positives, valid = classes.same_class_samples(queries)
    # The query's own entry in `sims` is -inf, so including it among the positives is harmless.
    best_positive = sims.gather(1, positives).masked_fill(~valid, -torch.inf).amax(1)
    ranks = sims.gt_(best_positive[:, None]).sum(1).long()
    no_positive = classes.n_relevant[queries] == 0
    return ranks.masked_fill(no_positive, torch.iinfo(torch.int64).max)


def _precisions_at_hits(sims, queries, classes, depth):
    """(Q x depth) float64: precision@i at the positions i where a same-class sample is, else 0."""
    neighbours = sims.topk(depth, dim=1).indices
    is_hit = classes.class_of[neighbours] == classes.class_of[queries][:, None]
    hits_so_far = is_hit.cumsum(1, dtype=torch.float64)
    positions = torch.arange(1, depth + 1, device=sims.device, dtype=torch.float64)
    return hits_so_far / positions * is_hit


def _mean_average_precision(precisions_at_hits, normaliser, cutoff):
    """Mean over queries with normaliser > 0 of (sum of precisions within cutoff) / normaliser."""
    within_cutoff = torch.arange(precisions_at_hits.shape[1],
                                 device=precisions_at_hits.device) < cutoff[:, None]
    average_precision = (precisions_at_hits * within_cutoff).sum(1) / normaliser
    return average_precision[normaliser > 0].mean().item()
