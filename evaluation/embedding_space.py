"""Measures of the embedding space itself, as the authors' evaluation computes them (Roth et al., "Revisiting
Training Strategies and Generalization Performance in Deep Metric Learning", ICML 2020): how dense the classes are
(dists@intra / inter / intra_over_inter) and how the singular values of the embeddings decay (rho_spectrum@M).

They read the embeddings as the network gives them (not normalised), as the authors' do; computed in float64.
"""
import functools

import numpy as np


class EmbeddingSpace:
    """The embeddings (N x D) and labels (N) of one evaluation, and the measures of them, each computed once."""

    def __init__(self, features, labels):
        self.features = np.asarray(features, dtype=np.float64)
        self.labels = np.asarray(labels)

    @functools.cached_property
    def intra_class_distance(self):
        """Mean over classes of the mean cosine distance (1 - cosine) between two different samples of the class.

        A class where it is undefined (a single sample, or a zero embedding, which has no direction) takes the
        largest value of the other classes, as the authors meant to (their code takes the entries at positions 0
        and 1 instead: a bug, see docs/differences.md); nan where every class is undefined."""
        norms = np.linalg.norm(self.features, axis=1, keepdims=True)
        with np.errstate(invalid='ignore', divide='ignore'):
            units = self.features / norms  # a zero embedding: nan, as scipy's cosine distance gives
        classes, index, sizes = np.unique(self.labels, return_inverse=True, return_counts=True)
        sums = np.zeros((len(classes), units.shape[1]))
        np.add.at(sums, index, units)
        with np.errstate(invalid='ignore', divide='ignore'):
            # sum over ordered pairs i != j of u_i . u_j = |sum of u|^2 - sum of |u_i|^2 (= the class size)
            distances = 1 - (np.sum(sums ** 2, axis=1) - sizes) / (sizes ** 2 - sizes)
        defined = np.isfinite(distances)
        if not defined.any():
            return float('nan')
        distances[~defined] = distances[defined].max()
        return float(distances.mean())

    @functools.cached_property
    def inter_class_distance(self):
        """Mean cosine distance between the directions of two different class means (nan with one class, or where a
        class mean is zero)."""
        classes, index = np.unique(self.labels, return_inverse=True)
        means = np.zeros((len(classes), self.features.shape[1]))
        np.add.at(means, index, self.features)
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        with np.errstate(invalid='ignore', divide='ignore'):
            directions = means / norms
            pairs = len(classes) ** 2 - len(classes)
            return float(1 - (np.sum(directions.sum(0) ** 2) - np.sum(directions ** 2)) / pairs)

    def distance_ratio(self):
        """intra / inter, the inter-class distance clipped below at 1e-8 (as the authors)."""
        return self.intra_class_distance / max(self.inter_class_distance, 1e-8)

    @functools.cached_property
    def spectrum(self):
        """The D - 1 largest singular values of the embeddings (not centred), descending: the authors' TruncatedSVD
        keeps D - 1 components. Values that are zero up to float64 rounding (rank-deficient embeddings, or fewer
        samples than dimensions) are 0."""
        values = np.linalg.svd(self.features, compute_uv=False)
        n_values = self.features.shape[1] - 1
        values = np.concatenate([values, np.zeros(max(0, n_values - len(values)))])[:n_values]
        tolerance = values.max(initial=0) * max(self.features.shape) * np.finfo(np.float64).eps
        return np.where(values > tolerance, values, 0.0)

    def rho(self, mode):
        """rho_spectrum@mode: 0 gives the normalised spectrum (a list); m > 0 the KL divergence of the normalised
        spectrum from index m - 1 on from the uniform distribution, KL(uniform || spectrum) (inf where a singular
        value is 0); m < 0 the other direction, KL(spectrum || uniform). nan where no singular value is left."""
        values = self.spectrum if mode == 0 else self.spectrum[abs(mode) - 1:]
        if not len(values) or not values.sum() > 0:
            return [float('nan')] * len(values) if mode == 0 else float('nan')
        spectrum = values / values.sum()
        if mode == 0:
            return spectrum.tolist()
        uniform = 1 / len(spectrum)
        with np.errstate(divide='ignore'):
            if mode > 0:
                return float(np.sum(uniform * (np.log(uniform) - np.log(spectrum))))
            present = spectrum > 0
            return float(np.sum(spectrum[present] * (np.log(spectrum[present]) - np.log(uniform))))
