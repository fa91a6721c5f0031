"""Euclidean distances between embeddings."""
import torch

# Keeps the gradient of sqrt finite (zero) when two embeddings coincide.
_SQRT_EPS = 1e-12


def pair_distances(embeddings, first, second):
    """Distances between embeddings[first[k]] and embeddings[second[k]] for every k (differentiable)."""
    difference = embeddings[first] - embeddings[second]
    return (difference.pow(2).sum(dim=1) + _SQRT_EPS).sqrt()


def pairwise_distances(embeddings):
    """B x B distance matrix, computed exactly (no Gram-matrix shortcut), for mining."""
    return torch.cdist(embeddings, embeddings, compute_mode='donot_use_mm_for_euclid_dist')
