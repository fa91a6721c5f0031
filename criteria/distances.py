"""Euclidean distances between embeddings, for mining."""
import torch


def pairwise_distances(embeddings):
    """B x B distance matrix, computed exactly (no Gram-matrix shortcut), for mining."""
    return torch.cdist(embeddings, embeddings, compute_mode='donot_use_mm_for_euclid_dist')
