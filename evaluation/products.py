"""What the metrics are read off: the products of one evaluation (the ranking of every query, a k-means clustering),
each built once, at the first metric that reads it, so that nothing a run does not ask for is computed.

A product is one builder in PRODUCTS: builder(inputs, requested) -> the product, given the EvaluationInputs and the
requested metrics (evaluation.metrics.RequestedMetric) that read it.
"""
import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from evaluation.clustering import Clustering, kmeans_assignment
from evaluation.retrieval import rank_queries, relevant_counts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationInputs:
    """The L2-normalised features (N x D float32) and labels (N int64) of the queries, those of the gallery (None in
    leave-one-out), and how to compute: on the GPU or not, the k-means seed, queries ranked per chunk."""
    features: np.ndarray
    labels: np.ndarray
    gallery_features: np.ndarray = None
    gallery_labels: np.ndarray = None
    use_gpu: bool = False
    seed: int = 0
    chunk_size: int = 1024

    @property
    def has_gallery(self):
        return self.gallery_features is not None


def build_retrieval(inputs, requested):
    """The Retrieval of every query: best same-class ranks where a metric reads 'ranks', the precisions at hits to
    the largest depth any metric reading 'hits' needs."""
    device = _retrieval_device(inputs.use_gpu)
    queries = torch.from_numpy(inputs.labels).to(device)
    gallery = (dict(gallery_features=torch.from_numpy(inputs.gallery_features).to(device),
                    gallery_labels=torch.from_numpy(inputs.gallery_labels).to(device)) if inputs.has_gallery else {})
    largest_r = int(relevant_counts(queries, gallery.get('gallery_labels')).max())
    depths = [request.metric.depth(request.parameter, largest_r) for request in requested
              if request.metric.reads == 'hits']
    return rank_queries(torch.from_numpy(inputs.features).to(device), queries,
                        ranks=any(request.metric.reads == 'ranks' for request in requested),
                        depth=max(depths) if depths else None, chunk_size=inputs.chunk_size, **gallery)


def build_clustering(inputs, requested):
    """A k-means Clustering with one cluster per class (query and gallery together)."""
    features, labels = inputs.features, inputs.labels
    if inputs.has_gallery:
        features, labels = (np.concatenate([features, inputs.gallery_features]),
                            np.concatenate([labels, inputs.gallery_labels]))
    return Clustering(labels, kmeans_assignment(features, len(np.unique(labels)), seed=inputs.seed,
                                                use_gpu=inputs.use_gpu))


PRODUCTS = {
    'ranks': build_retrieval,
    'hits': build_retrieval,
    'clusters': build_clustering,
}
"""Each product a metric may read, and its builder. Products with the same builder are built once together."""


def products_for(inputs, requested):
    """{product: product} for the `requested` metrics, each builder run once on the requests of all it builds."""
    built = {}
    for builder in dict.fromkeys(PRODUCTS[request.metric.reads] for request in requested):
        readers = [request for request in requested if PRODUCTS[request.metric.reads] is builder]
        product = builder(inputs, readers)
        built.update({request.metric.reads: product for request in readers})
    return built


def _retrieval_device(use_gpu):
    if use_gpu and not torch.cuda.is_available():
        _warn_no_torch_gpu()
    return torch.device('cuda' if use_gpu and torch.cuda.is_available() else 'cpu')


@functools.cache
def _warn_no_torch_gpu():
    logger.warning('GPU evaluation was asked for, but torch sees no CUDA device: '
                   'ranking on the CPU instead')
