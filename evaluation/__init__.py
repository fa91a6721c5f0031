"""Zero-shot evaluation: embedding extraction and the metrics of the test set (Recall@K, NMI, F1, MAP@R, the authors'
mAP variants and embedding-space measures, the peers' R-precision, MRR, precision@K and AMI; see METRICS).

The retrieval and clustering metrics see L2-normalised copies of the features, so the retrieval ranking is by cosine
similarity (the same order as the L2 distance the original faiss IndexFlatL2 code used on normalised embeddings)
and k-means clusters directions; the embedding-space measures (dists@..., rho_spectrum@...) read the features as the
network gave them, as the authors' do.
"""
import numpy as np

from evaluation.embeddings import AMP_NOTE, extract_embeddings
from evaluation.metrics import METRICS, is_score, parse_metric_names, validate_metric_names
from evaluation.products import EvaluationInputs, products_for
from evaluation.retrieval import DEFAULT_CHUNK_SIZE
from plumbing.errors import UserError

__all__ = ['AMP_NOTE', 'METRICS', 'NonFiniteEmbeddings', 'compute_metrics', 'extract_embeddings', 'is_score',
           'metrics_of_test_embeddings', 'validate_metric_names']


class NonFiniteEmbeddings(UserError):
    """The network gave nan or inf embeddings: training diverged, or the weights are damaged."""


def compute_metrics(features, labels, metric_names, *, use_gpu=False, seed=0,
                    chunk_size=DEFAULT_CHUNK_SIZE, gallery_features=None, gallery_labels=None):
    """{name: value} for each of `metric_names` (see METRICS) on features (N x D) and labels (N).

    Each sample queries all other samples (leave-one-out); with `gallery_features` (M x D) and
    `gallery_labels` (M), the samples are queries ranked against that gallery alone, and NMI and F1
    cluster query and gallery together. `use_gpu` runs the retrieval in torch on CUDA and
    k-means in faiss on the GPU, falling back to the CPU with a warning where there is none.
    `seed` seeds k-means; `chunk_size` is the number of queries ranked at a time (fewer where their similarities
    would take over evaluation.retrieval.SIMILARITY_BYTES). Only the products
    (evaluation.products) that the requested metrics read are computed.
    """
    requested = parse_metric_names(metric_names)
    features, labels = _checked_inputs(features, labels)
    gallery, raw_features = {}, features
    if gallery_features is not None:
        gallery_features, gallery_labels = _checked_inputs(gallery_features, gallery_labels)
        if gallery_features.shape[1] != features.shape[1]:
            raise ValueError(f'query features have {features.shape[1]} dimensions, gallery features '
                             f'{gallery_features.shape[1]}')
        gallery = dict(gallery_features=_normalised(gallery_features), gallery_labels=gallery_labels)
        raw_features = np.concatenate([features, gallery_features])
    inputs = EvaluationInputs(_normalised(features), labels, **gallery, raw_features=raw_features, use_gpu=use_gpu,
                              seed=seed, chunk_size=chunk_size)
    products = products_for(inputs, requested)
    return {request.name: request.metric.value(products[request.metric.reads], request.parameter)
            for request in requested}


def metrics_of_test_embeddings(embedded, metric_names, **options):
    """compute_metrics of the test embeddings {'testing': (features, labels)} (leave-one-out) or
    {'query': ..., 'gallery': ...} (query/gallery); `options` as compute_metrics takes them."""
    if 'gallery' in embedded:
        gallery_features, gallery_labels = embedded['gallery']
        return compute_metrics(*embedded['query'], metric_names, gallery_features=gallery_features,
                               gallery_labels=gallery_labels, **options)
    return compute_metrics(*embedded['testing'], metric_names, **options)


def _normalised(features):
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _checked_inputs(features, labels):
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if features.ndim != 2 or labels.shape != (len(features),) or len(features) < 2:
        raise ValueError(f'need features N x D and labels N with N >= 2, '
                         f'got shapes {features.shape} and {labels.shape}')
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features).all(axis=1)).sum())
        raise NonFiniteEmbeddings(f'the embeddings of {bad} of {len(features)} images contain nan or inf values: the '
                                  f'network has diverged (lower --lr) or its weights are damaged')
    return features, labels
