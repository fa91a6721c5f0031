"""Test helpers for criteria/: random batches and float64 loop implementations of each loss formula.

The references follow the formulas in DESIGN.md §4 and the loss docstrings one scalar at a time,
sharing no code with criteria/, so that autograd through them gives independent gradients.
"""
import math

import torch


def random_batch(n_classes, per_class, dim=16, seed=0, dtype=torch.float64):
    """L2-normalised random embeddings (leaf, requires grad) with labels [0]*per_class + [1]*per_class + ..."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n_classes * per_class, dim, generator=generator, dtype=torch.float64)
    points = points / points.norm(dim=1, keepdim=True)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return points.to(dtype).requires_grad_(), labels


def gradient(loss_fn, embeddings):
    """d loss / d embeddings of a fresh leaf copy of `embeddings`, and the loss."""
    leaf = embeddings.detach().clone().requires_grad_()
    loss = loss_fn(leaf)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def dot(x, i, j):
    return (x[i] * x[j]).sum()


def distance(x, i, j):
    return ((x[i] - x[j]) ** 2).sum().sqrt()


def multisimilarity_anchor_terms(x, labels, a=2.0, b=40.0, margin=0.1, threshold=0.5):
    """{anchor: its MS term} for the anchors that are not skipped."""
    labels = labels.tolist()
    size = len(labels)
    per_anchor = {}
    for i in range(size):
        positives = [j for j in range(size) if j != i and labels[j] == labels[i]]
        negatives = [j for j in range(size) if labels[j] != labels[i]]
        if not positives or not negatives:
            continue
        least_positive = min(dot(x, i, j).item() for j in positives)
        most_negative = max(dot(x, i, j).item() for j in negatives)
        hard_positives = [j for j in positives if dot(x, i, j).item() - margin < most_negative]
        hard_negatives = [j for j in negatives if dot(x, i, j).item() + margin > least_positive]
        if not hard_positives or not hard_negatives:
            continue
        positive_sum = sum(torch.exp(-a * (dot(x, i, j) - threshold)) for j in hard_positives)
        negative_sum = sum(torch.exp(b * (dot(x, i, j) - threshold)) for j in hard_negatives)
        per_anchor[i] = torch.log(1 + positive_sum) / a + torch.log(1 + negative_sum) / b
    return per_anchor


def multisimilarity_reference(x, labels, **settings):
    per_anchor = multisimilarity_anchor_terms(x, labels, **settings)
    if not per_anchor:
        return x.sum() * 0
    return sum(per_anchor.values()) / len(per_anchor)


def margin_reference(x, labels, triplets, beta, margin, nu):
    """beta: per-class tensor (may require grad)."""
    total, nonzero = 0.0, 0
    for a, p, n in triplets:
        class_beta = beta[labels[a]]
        positive_term = torch.relu(distance(x, a, p) - class_beta + margin)
        negative_term = torch.relu(class_beta - distance(x, a, n) + margin)
        nonzero += int(positive_term.item() > 0) + int(negative_term.item() > 0)
        total = total + positive_term + negative_term + nu * class_beta
    return total / nonzero if nonzero else total


def triplet_reference(x, triplets, margin):
    if not triplets:
        return x.sum() * 0
    terms = [torch.relu(distance(x, a, p) - distance(x, a, n) + margin) for a, p, n in triplets]
    return sum(terms) / len(terms)


def _mean_or_zero(terms):
    return sum(terms) / len(terms) if terms else 0.0


def contrastive_reference(x, labels, pos_margin, neg_margin):
    labels = labels.tolist()
    positive_terms, negative_terms = [], []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if labels[i] == labels[j]:
                positive_terms.append(torch.relu(distance(x, i, j) - pos_margin))
            else:
                negative_terms.append(torch.relu(neg_margin - distance(x, i, j)))
    return _mean_or_zero(positive_terms) + _mean_or_zero(negative_terms)


def softmax_rows(matrix):
    """Row-wise softmax of a list of lists of floats."""
    result = []
    for row in matrix:
        top = max(row)
        exps = [math.exp(value - top) for value in row]
        result.append([value / sum(exps) for value in exps])
    return result


def teacher_targets_reference(teacher, tau):
    t = teacher.tolist()
    size = len(t)
    similarity = [[sum(u * v for u, v in zip(t[i], t[j])) for j in range(size)] for i in range(size)]
    return softmax_rows([[s / tau for s in row] for row in similarity]), similarity


def diffused_targets_reference(teacher, tau, w, tau_d, iterations=200):
    """(1 - w) sum_k (w W)^k P by fixed-point iteration X <- (1 - w) P + w W X (no self-loops in W)."""
    targets, similarity = teacher_targets_reference(teacher, tau)
    size = len(targets)
    walk = []
    for i in range(size):
        top = max(similarity[i][j] for j in range(size) if j != i)
        exps = [0.0 if j == i else math.exp((similarity[i][j] - top) / tau_d) for j in range(size)]
        walk.append([value / sum(exps) for value in exps])
    diffused = [row[:] for row in targets]
    for _ in range(iterations):
        diffused = [[(1 - w) * targets[i][j] + w * sum(walk[i][k] * diffused[k][j] for k in range(size))
                     for j in range(size)] for i in range(size)]
    return diffused


def distillation_reference(x, targets, tau):
    """(1/B) sum_ij P_ij (log P_ij - log softmax(x xᵀ / tau)_ij), P given as lists of floats."""
    size = len(targets)
    total = 0.0
    for i in range(size):
        logits = [dot(x, i, j) / tau for j in range(size)]
        log_normaliser = torch.log(sum(torch.exp(value) for value in logits))
        for j in range(size):
            if targets[i][j] > 0:
                total = total + targets[i][j] * (math.log(targets[i][j]) - (logits[j] - log_normaliser))
    return total / size
