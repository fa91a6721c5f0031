"""The metric names `compute_metrics` understands and their parsing (each dataset module names its defaults)."""
import re
from dataclasses import dataclass, field

from utilities.errors import UserError

METRICS = {
    'e_recall@K': 'Recall@K: fraction of queries with at least one same-class sample among their '
                  'K nearest other samples (any positive integer K)',
    'nmi': 'normalised mutual information between the labels and a k-means clustering '
           '(k = number of classes)',
    'f1': 'pair-counting F1 of the same k-means clustering against the labels',
    'mAP@R': 'MAP@R (Musgrave et al. 2020): average precision over the R nearest, '
             'R = number of other samples of the query\'s class',
    'mAP@K': 'average precision over the K nearest, normalised by min(R, K) '
             '(any positive integer K, e.g. mAP@1000)',
}

_RECALL = re.compile(r'e_recall@([1-9][0-9]*)')
_MAP_AT_K = re.compile(r'mAP@([1-9][0-9]*)')


@dataclass
class MetricRequest:
    """What a list of metric names asks for, grouped by the computation that serves it."""
    recall_ks: list[int] = field(default_factory=list)
    map_at_r: bool = False
    map_ks: list[int] = field(default_factory=list)
    nmi: bool = False
    f1: bool = False

    @property
    def needs_retrieval(self):
        return bool(self.recall_ks or self.map_at_r or self.map_ks)

    @property
    def needs_clustering(self):
        return self.nmi or self.f1


def parse_metric_names(names):
    """Group `names` into a MetricRequest; raise UserError on an unknown name."""
    request = MetricRequest()
    for name in names:
        recall = _RECALL.fullmatch(name)
        map_at_k = _MAP_AT_K.fullmatch(name)
        if recall:
            request.recall_ks.append(int(recall.group(1)))
        elif map_at_k:
            request.map_ks.append(int(map_at_k.group(1)))
        elif name == 'mAP@R':
            request.map_at_r = True
        elif name == 'nmi':
            request.nmi = True
        elif name == 'f1':
            request.f1 = True
        else:
            raise UserError(f'unknown evaluation metric {name!r}: use one of '
                            f'{", ".join(METRICS)} (K a positive integer, e.g. e_recall@4)')
    return request


def validate_metric_names(names):
    """Raise UserError if any of `names` is not a metric `compute_metrics` knows."""
    parse_metric_names(names)
