"""The metrics `compute_metrics` knows, one entry each in METRICS: a name, what it measures, and how its value is read
off the products of one evaluation (evaluation.products: the ranked neighbours of every query, one k-means
clustering). A new metric is one entry here (one reading a new kind of product, plus its builder in
evaluation.products.PRODUCTS); each dataset module names its default metrics."""
import difflib
import math
import re
from dataclasses import dataclass
from typing import Callable

from evaluation.clustering import ami, nmi, pair_f1
from plumbing.errors import UserError

PARAMETERS = {'K': '([1-9][0-9]*)', 'M': '(0|-?[1-9][0-9]*)'}
"""The parameter a name may end in after '@', and the integers it stands for: K any positive integer, M any integer."""
_EXAMPLES = {'K': '1', 'M': '-1'}
_SAYS = {'K': 'a positive integer', 'M': 'an integer'}


@dataclass(frozen=True)
class Metric:
    """name: as the flags and summaries spell it; a trailing @K or @M stands for the integers of PARAMETERS
    (e_recall@K).
    reads: the product it is read off (a key of evaluation.products.PRODUCTS): 'ranks' (each query's best same-class
    rank), 'hits' (which of its nearest neighbours share its class), 'clusters' (a k-means clustering with one
    cluster per class), 'cosine clusters' (the samples assigned to its centroid directions) or 'embeddings' (the
    embeddings as the network gave them).
    value(product, parameter): the metric's value; parameter is the integer after '@' of a parametrised name, else None.
    depth(parameter, largest_r): how many nearest neighbours it reads, given the largest R of any query: for 'hits'
    the depth of the same-class ranks, for 'ranks' how far the best ranks must be exact (math.inf: all of them).
    score: higher is better (a best epoch, a checkpoint to keep); False for a measure of the embedding space."""
    name: str
    meaning: str
    reads: str
    value: Callable
    depth: Callable = None
    score: bool = True

    @property
    def parameter(self):
        """'K' or 'M' for a parametrised name (e_recall@K, rho_spectrum@M), else None."""
        stem, _, last = self.name.rpartition('@')
        return last if stem and last in PARAMETERS else None

    def pattern(self):
        if self.parameter:
            return re.compile(re.escape(self.name[:-len(self.parameter)]) + PARAMETERS[self.parameter])
        return re.compile(re.escape(self.name))


def _recall(ranks, k):
    return ranks.recall_at(k)


def _authors_map(cutoff):
    """The authors' mAP over the `cutoff(hits)` nearest: precisions at hits summed, divided by the size of the query's
    class with the query itself (their faiss search returned the query first and dropped it, but kept the class size
    it counted), averaged over every query (a lone one scores 0)."""
    return lambda hits, _: hits.mean_average_precision(hits.class_size, cutoff(hits))


_AUTHORS_MAP = {
    'mAP': ('every other sample', lambda hits: math.inf, lambda _, largest_r: math.inf),
    'mAP_c': ('the class-size nearest, the query counted in the class size (so at most R/(R+1); mAP@R is at most 1)',
              lambda hits: hits.class_size, lambda _, largest_r: largest_r + 1),
    'mAP_1000': ('the 1,000 nearest', lambda hits: 1000, lambda *_: 1000),
    'mAP_lim': ('the 1,023 nearest (faiss\'s GPU limit)', lambda hits: 1023, lambda *_: 1023),
}


def _authors_map_metrics():
    """mAP, mAP_c, mAP_1000, mAP_lim and their c_ twins (the authors' cosine versions, the same ranking here)."""
    metrics = []
    for name, (over, cutoff, depth) in _AUTHORS_MAP.items():
        for prefix in ('', 'c_'):
            meaning = (f'the authors\' {prefix}{name}: average precision over {over}, normalised by the size of the '
                       f'query\'s class in the set searched (leave-one-out: the query included, so the mean is over '
                       f'every query)')
            metrics.append(Metric(prefix + name, meaning, 'hits', _authors_map(cutoff), depth=depth))
    return tuple(metrics)


METRICS = (
    Metric('e_recall@K', 'Recall@K: fraction of queries with at least one same-class sample among their K nearest '
                         'other samples (any positive integer K)',
           'ranks', _recall, depth=lambda k, _: k),
    Metric('c_recall@K', 'the authors\' cosine Recall@K: the same as e_recall@K here, which ranks by cosine too',
           'ranks', _recall, depth=lambda k, _: k),
    Metric('nmi', 'normalised mutual information between the labels and a k-means clustering '
                  '(k = number of classes)',
           'clusters', lambda clusters, _: nmi(clusters.labels, clusters.assignment)),
    Metric('f1', 'pair-counting F1 of the same k-means clustering against the labels',
           'clusters', lambda clusters, _: pair_f1(clusters.labels, clusters.assignment)),
    Metric('c_nmi', 'the authors\' cosine NMI: each sample assigned to the k-means centroid direction of largest '
                    'inner product',
           'cosine clusters', lambda clusters, _: nmi(clusters.labels, clusters.assignment)),
    Metric('c_f1', 'the authors\' cosine F1: pair-counting F1 of that cosine assignment',
           'cosine clusters', lambda clusters, _: pair_f1(clusters.labels, clusters.assignment)),
    Metric('ami', 'adjusted mutual information (pytorch-metric-learning) of the k-means clustering of nmi',
           'clusters', lambda clusters, _: ami(clusters.labels, clusters.assignment)),
    Metric('mAP@R', 'MAP@R (Musgrave et al. 2020): average precision over the R nearest, '
                    'R = number of other samples of the query\'s class',
           'hits', lambda hits, _: hits.mean_average_precision(hits.n_relevant, hits.n_relevant),
           depth=lambda _, largest_r: largest_r),
    Metric('mAP@K', 'average precision over the K nearest, normalised by min(R, K) '
                    '(any positive integer K, e.g. mAP@1000)',
           'hits', lambda hits, k: hits.mean_average_precision(hits.n_relevant.clamp_max(k), k),
           depth=lambda k, _: k),
    *_authors_map_metrics(),
    Metric('r_precision', 'R-precision (pytorch-metric-learning): the share of same-class samples among the R nearest',
           'hits', lambda hits, _: hits.mean_where_relevant(hits.hits_within(hits.n_relevant) / hits.n_relevant),
           depth=lambda _, largest_r: largest_r),
    Metric('mrr', 'mean reciprocal rank (pytorch-metric-learning): 1 / the rank (from 1) of the first same-class '
                  'sample',
           'ranks', lambda ranks, _: ranks.mean_reciprocal_rank(), depth=lambda *_: math.inf),
    Metric('precision@K', 'precision@K (OML): same-class samples among the K nearest, divided by min(K, R)',
           'hits', lambda hits, k: hits.mean_where_relevant(hits.hits_within(k) / hits.n_relevant.clamp_max(k)),
           depth=lambda k, _: k),
    Metric('dists@intra', 'the authors\' intra-class distance: the mean over classes of the mean cosine distance '
                          'between two of its samples',
           'embeddings', lambda space, _: space.intra_class_distance, score=False),
    Metric('dists@inter', 'the authors\' inter-class distance: the mean cosine distance between two class means',
           'embeddings', lambda space, _: space.inter_class_distance, score=False),
    Metric('dists@intra_over_inter', 'the authors\' density: dists@intra / dists@inter (Roth et al. 2020)',
           'embeddings', lambda space, _: space.distance_ratio(), score=False),
    Metric('rho_spectrum@M', 'the authors\' spectral decay (Roth et al. 2020) of the D - 1 largest singular values '
                             'from the |M|-th on: M > 0 KL(uniform || spectrum), M < 0 KL(spectrum || uniform), '
                             'M = 0 the normalised spectrum itself (a list)',
           'embeddings', lambda space, m: space.rho(m), score=False),
)


@dataclass(frozen=True)
class RequestedMetric:
    """One name of a metric list: the Metric it names and its parameter (the integer after '@'; None where the name
    has none)."""
    name: str
    metric: Metric
    parameter: int = None


def parse_metric_names(names):
    """[RequestedMetric] of `names`, in their order; one UserError naming every unknown name, each with the closest
    known one."""
    requested, unknown = [], []
    for name in names:
        request = _parsed(name)
        if request is None:
            unknown.append(name)
        else:
            requested.append(request)
    if unknown:
        parameters = ', '.join(f'{kind} {says}' for kind, says in _SAYS.items())
        raise UserError(f'unknown evaluation metric{"s" if len(unknown) > 1 else ""} '
                        f'{", ".join(_unknown_with_hint(name) for name in unknown)}; known: '
                        f'{" ".join(metric.name for metric in METRICS)} ({parameters})')
    return requested


def _parsed(name):
    for metric in METRICS:
        match = metric.pattern().fullmatch(name)
        if match:
            return RequestedMetric(name, metric, int(match.group(1)) if match.groups() else None)
    return None


def _unknown_with_hint(name):
    """"'e_recal@1' (did you mean e_recall@1?)": the closest known name, with the parameter given where it fits."""
    stem, at, given = name.rpartition('@') if '@' in name else (name, '', '')
    candidates = {}
    for metric in METRICS:
        if metric.parameter:
            fits = re.fullmatch(PARAMETERS[metric.parameter], given) if at else None
            spelled = metric.name[:-len(metric.parameter)] + (given if fits else _EXAMPLES[metric.parameter])
        else:
            spelled = metric.name
        candidates[spelled.lower()] = spelled
    if name.lower() not in candidates:
        for metric in METRICS:
            if metric.parameter and at and stem == metric.name[:-len(metric.parameter) - 1]:
                says = _SAYS[metric.parameter]
                return f'{name!r} ({metric.parameter} is {says}, e.g. {stem}@{_EXAMPLES[metric.parameter]})'
    closest = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=0.5)
    return f'{name!r} (did you mean {candidates[closest[0]]}?)' if closest else repr(name)


def validate_metric_names(names):
    """Raise UserError if any of `names` is not a metric `compute_metrics` knows."""
    parse_metric_names(names)


def is_score(name):
    """Whether `name` (a test or val_ metric) is a known metric where higher is better: one a best epoch, a
    checkpoint or a search can be chosen on (not an embedding-space measure)."""
    request = _parsed(name.removeprefix('val_'))
    return request is not None and request.metric.score
