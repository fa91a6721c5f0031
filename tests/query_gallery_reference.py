"""Query/gallery retrieval metrics from their definitions (numpy, brute force): the reference for the tests."""
import numpy as np


def normalised(features):
    features = np.asarray(features, dtype=np.float64)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def ranked_gallery(queries, gallery):
    """For each query, the whole gallery from most to least similar (cosine)."""
    return np.argsort(-(normalised(queries) @ normalised(gallery).T), axis=1, kind='stable')


def recall_at_k(queries, query_labels, gallery, gallery_labels, k):
    """Fraction of queries with a same-class gallery image among their k nearest gallery images."""
    order = ranked_gallery(queries, gallery)
    hits = [np.any(gallery_labels[row[:k]] == label) for row, label in zip(order, query_labels, strict=True)]
    return float(np.mean(hits))


def map_at_r(queries, query_labels, gallery, gallery_labels):
    """MAP@R, R = the query's class's gallery images; queries without any are left out."""
    average_precisions = []
    for row, label in zip(ranked_gallery(queries, gallery), query_labels, strict=True):
        n_relevant = int(np.sum(gallery_labels == label))
        if n_relevant == 0:
            continue
        hits = gallery_labels[row[:n_relevant]] == label
        precisions = np.cumsum(hits) / np.arange(1, n_relevant + 1)
        average_precisions.append(float(np.sum(precisions * hits) / n_relevant))
    return float(np.mean(average_precisions))
