"""Clustering metrics: faiss k-means with one cluster per class, scored by NMI, AMI and pair F1; the authors' cosine
variants (c_nmi, c_f1) assign each sample to the centroid direction of largest inner product instead."""
import functools
import logging
from typing import NamedTuple

import numpy as np
import torch

from plumbing.lazy import lazy_module

faiss = lazy_module('faiss')
sklearn_metrics = lazy_module('sklearn.metrics')

logger = logging.getLogger(__name__)


class Clustering(NamedTuple):
    """A k-means clustering of labelled samples: what the clustering metrics read."""
    labels: np.ndarray
    assignment: np.ndarray


def kmeans_assignment(features, n_clusters, *, seed=0, use_gpu=False, n_iterations=20):
    """Cluster index (N int64) of each row of `features` (N x D float32) after faiss k-means."""
    return kmeans_clustering(features, n_clusters, seed=seed, use_gpu=use_gpu, n_iterations=n_iterations)[0]


def kmeans_clustering(features, n_clusters, *, seed=0, use_gpu=False, n_iterations=20):
    """(cluster index (N int64) of each row of `features` (N x D float32) after faiss k-means, the centroids
    (n_clusters x D float32))."""
    gpu = use_gpu and faiss.get_num_gpus() > 0
    if use_gpu and not gpu:
        _warn_no_faiss_gpu()
    features = np.ascontiguousarray(features, dtype=np.float32)
    # min_points_per_centroid=1 only silences faiss's warning for SOP's ~5 samples per class.
    kmeans = faiss.Kmeans(features.shape[1], n_clusters, niter=n_iterations, seed=seed, gpu=False,
                          min_points_per_centroid=1)
    resources = None
    if gpu:
        # faiss.Kmeans(gpu=True) would spread its index over every visible GPU (gpu=N: over GPUs 0..N-1): this
        # process's own device alone does it, with the same flat L2 index that Kmeans builds.
        resources = faiss.StandardGpuResources()
        kmeans.index = faiss.index_cpu_to_gpu(resources, current_cuda_device(), faiss.IndexFlatL2(features.shape[1]))
    kmeans.train(features)
    _, assignment = kmeans.index.search(features, 1)
    centroids = kmeans.centroids.copy()
    del kmeans, resources  # the index before the GPU resources it uses
    return assignment[:, 0].astype(np.int64), centroids


def cosine_assignment(features, centroids):
    """Index (N int64) of the centroid direction of largest inner product with each row of `features` (the unit
    embeddings): the authors' assignment for c_nmi and c_f1 (faiss IndexFlatIP on L2-normalised centroids)."""
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    directions = np.ascontiguousarray(centroids / np.maximum(norms, 1e-12), dtype=np.float32)
    index = faiss.IndexFlatIP(directions.shape[1])
    index.add(directions)
    return index.search(np.ascontiguousarray(features, dtype=np.float32), 1)[1][:, 0].astype(np.int64)


def current_cuda_device():
    """The CUDA device index of this process (under torchrun its LOCAL_RANK's; else --gpu's), 0 without torch CUDA."""
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def nmi(labels, assignment):
    """Normalised mutual information (sklearn, arithmetic normalisation) of a clustering."""
    return float(sklearn_metrics.normalized_mutual_info_score(labels, assignment))


def ami(labels, assignment):
    """Adjusted mutual information (sklearn, arithmetic normalisation) of a clustering, as pytorch-metric-learning."""
    return float(sklearn_metrics.adjusted_mutual_info_score(labels, assignment))


def pair_f1(labels, assignment):
    """F1 over sample pairs: a pair is predicted together when it shares a cluster.

    precision = same-class pairs among same-cluster pairs, recall = same-cluster pairs among
    same-class pairs; 0 when either is undefined or both are 0.
    """
    (_, false_together), (false_apart, true_together) = sklearn_metrics.pair_confusion_matrix(labels, assignment)
    if true_together == 0:
        return 0.0
    precision = true_together / (true_together + false_together)
    recall = true_together / (true_together + false_apart)
    return float(2 * precision * recall / (precision + recall))


@functools.cache
def _warn_no_faiss_gpu():
    logger.warning('GPU evaluation was asked for, but faiss sees no GPU: '
                   'running k-means on the CPU instead')
