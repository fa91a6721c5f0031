"""The metrics `compute_metrics` knows, one entry each in METRICS: a name, what it measures, and how its value is read
off the products of one evaluation (evaluation.products: the ranked neighbours of every query, one k-means
clustering). A new metric is one entry here (one reading a new kind of product, plus its builder in
evaluation.products.PRODUCTS); each dataset module names its default metrics."""
import re
from dataclasses import dataclass
from typing import Callable

from evaluation.clustering import nmi, pair_f1
from plumbing.errors import UserError

PARAMETERS = {'K': '([1-9][0-9]*)'}
"""The parameter a name may end in after '@', and the integers it stands for: K any positive integer."""


@dataclass(frozen=True)
class Metric:
    """name: as the flags and summaries spell it; a trailing @K stands for the integers of PARAMETERS['K'] (e_recall@K).
    reads: the product it is read off (a key of evaluation.products.PRODUCTS): 'ranks' (each query's best same-class
    rank), 'hits' (which of its nearest neighbours share its class) or 'clusters' (a k-means clustering with one
    cluster per class).
    value(product, parameter): the metric's value; parameter is the integer after '@' of a parametrised name, else None.
    depth(parameter, largest_r): for 'hits', how many nearest neighbours it reads, given the largest R of any query."""
    name: str
    meaning: str
    reads: str
    value: Callable
    depth: Callable = None

    @property
    def parameter(self):
        """'K' for a parametrised name (e_recall@K), else None."""
        stem, _, last = self.name.rpartition('@')
        return last if stem and last in PARAMETERS else None

    def pattern(self):
        if self.parameter:
            return re.compile(re.escape(self.name[:-len(self.parameter)]) + PARAMETERS[self.parameter])
        return re.compile(re.escape(self.name))


METRICS = (
    Metric('e_recall@K', 'Recall@K: fraction of queries with at least one same-class sample among their K nearest '
                         'other samples (any positive integer K)',
           'ranks', lambda ranks, k: ranks.recall_at(k)),
    Metric('nmi', 'normalised mutual information between the labels and a k-means clustering '
                  '(k = number of classes)',
           'clusters', lambda clusters, _: nmi(clusters.labels, clusters.assignment)),
    Metric('f1', 'pair-counting F1 of the same k-means clustering against the labels',
           'clusters', lambda clusters, _: pair_f1(clusters.labels, clusters.assignment)),
    Metric('mAP@R', 'MAP@R (Musgrave et al. 2020): average precision over the R nearest, '
                    'R = number of other samples of the query\'s class',
           'hits', lambda hits, _: hits.mean_average_precision(hits.n_relevant, hits.n_relevant),
           depth=lambda _, largest_r: largest_r),
    Metric('mAP@K', 'average precision over the K nearest, normalised by min(R, K) '
                    '(any positive integer K, e.g. mAP@1000)',
           'hits', lambda hits, k: hits.mean_average_precision(hits.n_relevant.clamp_max(k), k),
           depth=lambda k, _: k),
)


@dataclass(frozen=True)
class RequestedMetric:
    """One name of a metric list: the Metric it names and its parameter (the integer after '@'; None where the name
    has none)."""
    name: str
    metric: Metric
    parameter: int = None


def parse_metric_names(names):
    """[RequestedMetric] of `names`, in their order; a UserError on an unknown name."""
    requested = []
    for name in names:
        for metric in METRICS:
            match = metric.pattern().fullmatch(name)
            if match:
                requested.append(RequestedMetric(name, metric, int(match.group(1)) if match.groups() else None))
                break
        else:
            raise UserError(f'unknown evaluation metric {name!r}: use one of '
                            f'{", ".join(metric.name for metric in METRICS)} (K a positive integer, e.g. e_recall@4)')
    return requested


def validate_metric_names(names):
    """Raise UserError if any of `names` is not a metric `compute_metrics` knows."""
    parse_metric_names(names)
