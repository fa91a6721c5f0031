"""Query/gallery evaluation: queries ranked against a separate gallery, checked against definitions and
pytorch-metric-learning's AccuracyCalculator with a separate reference set."""
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

import evaluation
from query_gallery_reference import map_at_r, recall_at_k

KS = (1, 10, 20, 30)


def query_gallery(n_query=37, n_gallery=45, n_classes=8, dim=6, seed=0):
    """Random features; every query class has gallery images, the gallery has two classes no query has."""
    rng = np.random.default_rng(seed)
    gallery_labels = rng.permutation(np.concatenate([np.arange(n_classes + 2).repeat(2),
                                                     rng.integers(0, n_classes + 2, n_gallery - 2 * n_classes - 4)]))
    query_labels = rng.permutation(np.concatenate([np.arange(n_classes), rng.integers(0, n_classes,
                                                                                      n_query - n_classes)]))
    centres = rng.standard_normal((n_classes + 2, dim))
    queries = (centres[query_labels] + rng.standard_normal((n_query, dim))).astype(np.float32)
    gallery = (centres[gallery_labels] + rng.standard_normal((n_gallery, dim))).astype(np.float32)
    return queries, query_labels, gallery, gallery_labels


def ours(queries, query_labels, gallery, gallery_labels, names, **options):
    return evaluation.compute_metrics(queries, query_labels, names, gallery_features=gallery,
                                      gallery_labels=gallery_labels, **options)


class RecallAtK(AccuracyCalculator):
    """AccuracyCalculator with Recall@K (a same-label reference among the K nearest) for the K of KS."""

    def requires_knn(self):
        return super().requires_knn() + [f'recall_at_{k}' for k in KS]


for _k in KS:
    setattr(RecallAtK, f'calculate_recall_at_{_k}',
            lambda self, knn_labels, query_labels, k=_k, **kwargs:
            (knn_labels[:, :k] == query_labels[:, None]).any(1).double().mean().item())


@pytest.mark.parametrize('chunk_size', [4, 1000])
def test_query_gallery_metrics_match_brute_force_and_pytorch_metric_learning(chunk_size):
    data = query_gallery()
    names = [f'e_recall@{k}' for k in KS] + ['mAP@R']
    metrics = ours(*data, names, chunk_size=chunk_size)
    queries, query_labels, gallery, gallery_labels = data
    normalise = lambda x: torch.nn.functional.normalize(torch.from_numpy(x), dim=1)  # noqa: E731
    calculator = RecallAtK(include=('precision_at_1', 'mean_average_precision_at_r',
                                    *[f'recall_at_{k}' for k in KS]), k=len(gallery), device=torch.device('cpu'))
    theirs = calculator.get_accuracy(normalise(queries), torch.from_numpy(query_labels), normalise(gallery),
                                     torch.from_numpy(gallery_labels), ref_includes_query=False)
    for k in KS:
        assert metrics[f'e_recall@{k}'] == pytest.approx(recall_at_k(*data, k))
        assert metrics[f'e_recall@{k}'] == pytest.approx(theirs[f'recall_at_{k}'])
    assert metrics['e_recall@1'] == pytest.approx(theirs['precision_at_1'])
    assert metrics['mAP@R'] == pytest.approx(map_at_r(*data))
    assert metrics['mAP@R'] == pytest.approx(theirs['mean_average_precision_at_r'])
    assert 0 < metrics['e_recall@1'] < metrics['e_recall@30'] <= 1


def test_gallery_image_with_the_querys_index_is_not_left_out():
    # Query i and gallery image i are different images: an identical pair at the same index is a hit.
    queries = np.eye(3, dtype=np.float32)
    gallery = np.eye(3, dtype=np.float32)
    metrics = ours(queries, np.arange(3), gallery, np.arange(3), ['e_recall@1', 'mAP@R'])
    assert metrics == {'e_recall@1': 1.0, 'mAP@R': 1.0}


def test_queries_without_a_gallery_positive_are_misses_and_left_out_of_map():
    queries, query_labels, gallery, gallery_labels = query_gallery(seed=1)
    query_labels = query_labels.copy()
    query_labels[:5] = 99  # a class the gallery does not have
    metrics = ours(queries, query_labels, gallery, gallery_labels, ['e_recall@1', 'e_recall@30', 'mAP@R'])
    kept = slice(5, None)
    for k in (1, 30):
        with_positive = recall_at_k(queries[kept], query_labels[kept], gallery, gallery_labels, k)
        assert metrics[f'e_recall@{k}'] == pytest.approx(with_positive * (len(queries) - 5) / len(queries))
    assert metrics['mAP@R'] == pytest.approx(map_at_r(queries[kept], query_labels[kept], gallery, gallery_labels))


def test_no_query_with_a_gallery_positive_gives_zero_recall_and_nan_map():
    queries, query_labels, gallery, gallery_labels = query_gallery()
    metrics = ours(queries, np.full(len(queries), 99), gallery, gallery_labels, ['e_recall@1', 'mAP@R'], chunk_size=2)
    assert metrics['e_recall@1'] == 0 and np.isnan(metrics['mAP@R'])


def test_clustering_metrics_cluster_query_and_gallery_together(monkeypatch):
    queries, query_labels, gallery, gallery_labels = query_gallery()
    seen = {}

    def fake_kmeans(features, n_clusters, **options):
        seen['rows'], seen['clusters'] = len(features), n_clusters
        return np.concatenate([query_labels, gallery_labels]), None

    monkeypatch.setattr(evaluation.products, 'kmeans_clustering', fake_kmeans)
    metrics = ours(queries, query_labels, gallery, gallery_labels, ['nmi', 'f1'])
    assert seen == {'rows': len(queries) + len(gallery), 'clusters': len(np.unique(gallery_labels))}
    assert metrics == {'nmi': pytest.approx(1.0), 'f1': pytest.approx(1.0)}


def test_retrieval_grid_neighbours_come_from_the_gallery_without_self_exclusion():
    from reporting.figures import nearest_neighbours

    queries, _, gallery, _ = query_gallery()
    picked = np.array([0, 3, 5])
    found = nearest_neighbours(queries, picked, 4, gallery=gallery)
    sims = (queries[picked] / np.linalg.norm(queries[picked], axis=1, keepdims=True)) @ \
        (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(found, np.argsort(-sims, axis=1, kind='stable')[:, :4])
    same = np.eye(3, dtype=np.float32)
    assert nearest_neighbours(same, np.arange(3), 1, gallery=same)[:, 0].tolist() == [0, 1, 2]


def test_test_embeddings_choose_the_protocol():
    """Query and gallery when both are there (an image may find itself in the gallery), else leave-one-out."""
    queries, query_labels, gallery, gallery_labels = query_gallery()
    both = {'query': (queries, query_labels), 'gallery': (gallery, gallery_labels)}
    assert evaluation.metrics_of_test_embeddings(both, ['e_recall@10'])['e_recall@10'] == pytest.approx(
        recall_at_k(queries, query_labels, gallery, gallery_labels, 10))
    twice = {'query': (gallery, gallery_labels), 'gallery': (gallery, gallery_labels)}
    assert evaluation.metrics_of_test_embeddings(twice, ['e_recall@1']) == {'e_recall@1': 1.0}
    left_out = evaluation.metrics_of_test_embeddings({'testing': (gallery, gallery_labels)}, ['e_recall@1'])
    normalised = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    similarities = normalised @ normalised.T
    np.fill_diagonal(similarities, -np.inf)  # leave-one-out: never the query itself
    expected = np.mean(gallery_labels[similarities.argmax(axis=1)] == gallery_labels)
    assert left_out['e_recall@1'] == pytest.approx(expected) and expected < 1
