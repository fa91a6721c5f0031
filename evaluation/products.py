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

from evaluation.clustering import Clustering, cosine_assignment, kmeans_clustering
from evaluation.embedding_space import EmbeddingSpace
from evaluation.retrieval import DEFAULT_CHUNK_SIZE, rank_queries, relevant_counts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationInputs:
    """The L2-normalised features (N x D float32) and labels (N int64) of the queries, those of the gallery (None in
    leave-one-out), the features as the network gave them (query and gallery together), and how to compute: on the
    GPU or not, the k-means seed, queries ranked per chunk."""
    features: np.ndarray
    labels: np.ndarray
    gallery_features: np.ndarray = None
    gallery_labels: np.ndarray = None
    raw_features: np.ndarray = None
    use_gpu: bool = False
    seed: int = 0
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @property
    def has_gallery(self):
        return self.gallery_features is not None

    def all_samples(self):
        """(normalised features, labels) of query and gallery together."""
        if not self.has_gallery:
            return self.features, self.labels
        return (np.concatenate([self.features, self.gallery_features]),
                np.concatenate([self.labels, self.gallery_labels]))


def build_retrieval(inputs, requested):
    """The Retrieval of every query: best same-class ranks where a metric reads 'ranks' (exact as far as the deepest
    of them needs), the ranks of same-class samples to the largest depth any metric reading 'hits' needs."""
    device = _retrieval_device(inputs.use_gpu)
    queries = torch.from_numpy(inputs.labels).to(device)
    gallery = (dict(gallery_features=torch.from_numpy(inputs.gallery_features).to(device),
                    gallery_labels=torch.from_numpy(inputs.gallery_labels).to(device)) if inputs.has_gallery else {})
    largest_r = int(relevant_counts(queries, gallery.get('gallery_labels')).max())
    depths = {kind: [request.metric.depth(request.parameter, largest_r) for request in requested
                     if request.metric.reads == kind] for kind in ('ranks', 'hits')}
    return rank_queries(torch.from_numpy(inputs.features).to(device), queries, ranks=bool(depths['ranks']),
                        ranks_below=max(depths['ranks'], default=None), depth=max(depths['hits'], default=None),
                        chunk_size=inputs.chunk_size, **gallery)


def build_clusterings(inputs, requested):
    """{'clusters': the k-means Clustering with one cluster per class (query and gallery together), 'cosine clusters':
    the samples assigned to the centroid directions of that k-means (where a metric reads it)}."""
    features, labels = inputs.all_samples()
    assignment, centroids = kmeans_clustering(features, len(np.unique(labels)), seed=inputs.seed,
                                              use_gpu=inputs.use_gpu)
    clusterings = {'clusters': Clustering(labels, assignment)}
    if any(request.metric.reads == 'cosine clusters' for request in requested):
        clusterings['cosine clusters'] = Clustering(labels, cosine_assignment(features, centroids))
    return clusterings


def build_embedding_space(inputs, requested):
    """The EmbeddingSpace of the embeddings as the network gave them (query and gallery together)."""
    return EmbeddingSpace(inputs.raw_features, inputs.all_samples()[1])


PRODUCTS = {
    'ranks': build_retrieval,
    'hits': build_retrieval,
    'clusters': build_clusterings,
    'cosine clusters': build_clusterings,
    'embeddings': build_embedding_space,
}
"""Each product a metric may read, and its builder. Products with the same builder are built once together: its
builder returns either the one product all of them read, or {product: product}."""


def products_for(inputs, requested):
    """{product: product} for the `requested` metrics, each builder run once on the requests of all it builds."""
    built = {}
    for builder in dict.fromkeys(PRODUCTS[request.metric.reads] for request in requested):
        readers = [request for request in requested if PRODUCTS[request.metric.reads] is builder]
        product = builder(inputs, readers)
        built.update(product if isinstance(product, dict) else
                     {request.metric.reads: product for request in readers})
    return built


def _retrieval_device(use_gpu):
    if use_gpu and not torch.cuda.is_available():
        _warn_no_torch_gpu()
    return torch.device('cuda' if use_gpu and torch.cuda.is_available() else 'cpu')


@functools.cache
def _warn_no_torch_gpu():
    logger.warning('GPU evaluation was asked for, but torch sees no CUDA device: '
                   'ranking on the CPU instead')
