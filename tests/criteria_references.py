"""Test helpers for criteria/: random batches and float64 loop implementations of each loss formula.

The references follow the formulas in DESIGN.md §4 and the authors' criteria/<name>.py files one tuple (or one
scalar) at a time, sharing no code with criteria/, so that autograd through them gives independent gradients.
AUTHORS_LOOPS names the reference of each loss for the tests and benchmarks/loss_speed.py.
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


def triplet_list(indices_tuple):
    """[(a, p, n), ...] from index tensors."""
    return list(zip(*(index.tolist() for index in indices_tuple[:3])))


def set_list(anchors, members):
    """[(anchor, [its members]), ...] from an anchors tensor and an anchors x batch boolean mask."""
    return [(a, row.nonzero().flatten().tolist()) for a, row in zip(anchors.tolist(), members)]


def zero_of(x):
    return x.sum() * 0


# The per-tuple loops below follow the authors' criteria/<name>.py files (ZelongZeng/OBD-SD_Pytorch) one tuple at a
# time, written from reading them; the loss's settings come from the criterion under test.

def margin_reference(x, labels, triplets, beta, margin, nu):
    """Their margin.py: d = sqrt(|a - b|² + 1e-8); divisor = triplets with pos_loss > 0 OR neg_loss > 0 (a bool `+`);
    nu * sum(beta) added after the division. beta: per-class tensor (may require grad)."""
    if not triplets:
        return zero_of(x)
    total, any_active, beta_sum = 0.0, 0, 0.0
    for a, p, n in triplets:
        class_beta = beta[labels[a]]
        d_ap = (((x[a] - x[p]) ** 2).sum() + 1e-8) ** 0.5
        d_an = (((x[a] - x[n]) ** 2).sum() + 1e-8) ** 0.5
        positive_term = torch.relu(d_ap - class_beta + margin)
        negative_term = torch.relu(class_beta - d_an + margin)
        any_active += int(positive_term.item() > 0 or negative_term.item() > 0)
        total = total + positive_term + negative_term
        beta_sum = beta_sum + class_beta
    loss = total / any_active if any_active else total
    return loss + nu * beta_sum if nu else loss


def triplet_reference(x, triplets, margin):
    """Their triplet.py: relu(|a - p|² - |a - n|² + margin), the mean over all triplets."""
    if not triplets:
        return zero_of(x)
    terms = [torch.relu(((x[a] - x[p]) ** 2).sum() - ((x[a] - x[n]) ** 2).sum() + margin) for a, p, n in triplets]
    return sum(terms) / len(terms)


def pairwise_distance_reference(u, v, eps=1e-6):
    """nn.PairwiseDistance(p=2): |u - v + eps|."""
    return (((u - v + eps) ** 2).sum()) ** 0.5


def contrastive_reference(x, triplets, pos_margin, neg_margin):
    """Their contrastive.py: the mean over the triplets' (a, p) pairs of relu(d - pos_margin) plus the mean over their
    (a, n) pairs of relu(neg_margin - d), d nn.PairwiseDistance's."""
    if not triplets:
        return zero_of(x)
    positive_terms = [torch.relu(pairwise_distance_reference(x[a], x[p]) - pos_margin) for a, p, _ in triplets]
    negative_terms = [torch.relu(neg_margin - pairwise_distance_reference(x[a], x[n])) for a, _, n in triplets]
    return sum(positive_terms) / len(triplets) + sum(negative_terms) / len(triplets)


def lifted_reference(x, anchor_sets, margin, l2_weight):
    """Their lifted.py, anchor by anchor: nn.PairwiseDistance over (1, D, 1) and (1, D, |set|) tensors reduces the
    LAST dimension, the set: u_d = |(x_ad - x_pd + eps)_{p in P}| for each coordinate d; then logsumexp over the
    coordinates. anchor_sets: [(a, positives, negatives)]; anchors without negatives are left out."""
    terms = []
    for a, positive_set, negative_set in anchor_sets:
        if not negative_set:
            continue
        spreads_p = (((x[a][:, None] - x[positive_set].T + 1e-6) ** 2).sum(dim=1)) ** 0.5
        spreads_n = (((x[a][:, None] - x[negative_set].T + 1e-6) ** 2).sum(dim=1)) ** 0.5
        terms.append(torch.relu(torch.log(torch.exp(spreads_p).sum()) + torch.log(torch.exp(margin - spreads_n).sum())))
    if not terms:
        return zero_of(x)
    return sum(terms) / len(terms) + l2_weight * ((x ** 2).sum(dim=1) ** 0.5).mean()


def npair_reference(x, anchor_tuples, l2_weight, scale=1.0):
    """Their npair.py: per anchor, log(1 + sum_n exp(a . (n - p))) / #anchors and l2_weight * mean |x| / #anchors,
    on the embeddings times `scale` (1/4 for bninception). anchor_tuples: [(a, p, negatives)]."""
    x = x * scale
    loss = zero_of(x)
    mean_norm = ((x ** 2).sum(dim=1) ** 0.5).mean()
    for a, p, negative_set in anchor_tuples:
        inner = (x[negative_set] - x[p]) @ x[a]
        loss = loss + torch.log(torch.exp(inner).sum() + 1) / len(anchor_tuples)
        loss = loss + l2_weight * mean_norm / len(anchor_tuples)
    return loss


def angular_reference(x, anchor_tuples, alpha, angular_weight, l2_weight):
    """Their angular.py as it means to compute (it crashes before): per anchor, the N-pair term on the raw
    embeddings (inner products clamped to [-50, 50]) plus angular_weight times the angular term of Wang et al. on
    the normalised ones, f = 4 tan²(alpha) (a + p) . n - 2 (1 + tan²(alpha)) a . p; means over the anchors, plus
    l2_weight * mean |x|."""
    if not anchor_tuples:
        return zero_of(x)
    tan2 = math.tan(alpha * math.pi / 180) ** 2
    unit = x / ((x ** 2).sum(dim=1, keepdim=True) ** 0.5).clamp(min=1e-12)
    npair_terms, angular_terms = [], []
    for a, p, negative_set in anchor_tuples:
        inner = torch.clamp((x[negative_set] - x[p]) @ x[a], -50, 50)
        npair_terms.append(torch.log(torch.exp(inner).sum() + 1))
        f = 4 * tan2 * unit[negative_set] @ (unit[a] + unit[p]) - 2 * (1 + tan2) * (unit[a] * unit[p]).sum()
        angular_terms.append(torch.log(torch.exp(f).sum() + 1))
    mean_norm = ((x ** 2).sum(dim=1) ** 0.5).mean()
    return (sum(npair_terms) / len(npair_terms) + angular_weight * sum(angular_terms) / len(angular_terms)
            + l2_weight * mean_norm)


def quadruplet_reference(x, triplets, fourth, alpha_1, alpha_2):
    """Their quadruplet.py: mean_k relu(|a - p| - |a - n| + alpha_1) plus the mean over triplets k AND fourth samples
    m_j of relu(|a_k - p_k| - |n_k - m_j| + alpha_2): their (T, 1, D) negatives minus the (T, D) fourth samples
    broadcast to T x T."""
    if not triplets:
        return zero_of(x)
    triplet_terms, quadruplet_terms = [], []
    for a, p, n in triplets:
        d_ap = torch.norm(x[a] - x[p])
        triplet_terms.append(torch.relu(d_ap - torch.norm(x[a] - x[n]) + alpha_1))
        quadruplet_terms += [torch.relu(d_ap - torch.norm(x[n] - x[m]) + alpha_2) for m in fourth]
    second = sum(quadruplet_terms) / len(quadruplet_terms) if quadruplet_terms else 0.0
    return sum(triplet_terms) / len(triplet_terms) + second


def unbiased_variance(v):
    return ((v - v.mean()) ** 2).sum() / (len(v) - 1)


def snr_reference(x, triplets, margin, reg_lambda):
    """Their snr.py: SNR(a, b) = var(a - b) / var(a); sum of relu(SNR_ap - SNR_an + margin) over the active
    triplets' count, plus reg_lambda * mean |sum(a)| over the triplets' anchors."""
    if not triplets:
        return zero_of(x)
    terms = [torch.relu(unbiased_variance(x[a] - x[p]) / unbiased_variance(x[a])
                        - unbiased_variance(x[a] - x[n]) / unbiased_variance(x[a]) + margin) for a, p, n in triplets]
    active = sum(int(term.item() > 0) for term in terms)
    loss = sum(terms) / active if active else zero_of(x)
    return loss + reg_lambda * sum(x[a].sum().abs() for a, _, _ in triplets) / len(triplets)


def histogram_reference(x, labels, nbins):
    """Their histogram.py, pair by pair: each unordered pair's dot product s adds (t_r+1 - s)/w to node r and
    (s - t_r)/w to node r + 1 of its histogram (r = int((s + 1) / w), w = 2 / (nbins - 1), nodes t_r = -1 + r w),
    normalised by the pair count; loss = sum_k h_neg[k] * sum_{j <= k} h_pos[j]."""
    labels = labels.tolist()
    width = 2 / (nbins - 1)
    histograms = {True: [zero_of(x)] * nbins, False: [zero_of(x)] * nbins}
    counts = {True: 0, False: 0}
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            same = labels[i] == labels[j]
            s = (x[i] * x[j]).sum()
            r = int((s.item() + 1) / width)
            counts[same] += 1
            if 0 <= r < nbins:
                histograms[same][r] = histograms[same][r] + ((-1 + (r + 1) * width) - s) / width
            if 0 <= r + 1 < nbins:
                histograms[same][r + 1] = histograms[same][r + 1] + (s - (-1 + r * width)) / width
    if not counts[True] or not counts[False]:
        return zero_of(x)
    positive = [value / counts[True] for value in histograms[True]]
    negative = [value / counts[False] for value in histograms[False]]
    return sum(negative[k] * sum(positive[:k + 1]) for k in range(nbins))


def smooth_ap_reference(x, labels, anneal):
    """Their smooth_ap_loss.py (the Smooth-AP authors' code): for query q and each i of q's class (q included),
    R_all = 1 + sum_{j != i} sig((s_qj - s_qi) / anneal) over the whole batch (q included), R_pos the same over q's
    class; AP_q = mean_i R_pos / R_all; loss 1 - mean_q AP_q. sig clamps its exponent to [-50, 50]."""
    similarity = x @ x.T
    precision = 0.0
    for q in range(len(labels)):
        members = (labels == labels[q]).nonzero().flatten().tolist()
        total = 0.0
        for i in members:
            others = torch.arange(len(labels)) != i
            steps = 1 / (1 + torch.exp(torch.clamp(-(similarity[q] - similarity[q, i]) / anneal, -50, 50)))
            rank_all = 1 + steps[others].sum()
            rank_positive = 1 + steps[others & (labels == labels[q])].sum()
            total = total + rank_positive / rank_all
        precision = precision + total / len(members)
    return 1 - precision / len(labels)


def multisimilarity_loop(x, labels, pos_weight, neg_weight, margin, threshold):
    """Their multisimilarity.py, anchor by anchor (tensor operations within an anchor); 0 where no anchor counts."""
    similarity = x @ x.T
    terms = []
    for i in range(len(labels)):
        positive = (labels == labels[i]) & (torch.arange(len(labels)) != i)
        positive_sims, negative_sims = similarity[i][positive], similarity[i][labels != labels[i]]
        if not len(positive_sims) or not len(negative_sims):
            continue
        hard_negatives = negative_sims[negative_sims + margin > positive_sims.min()]
        hard_positives = positive_sims[positive_sims - margin < negative_sims.max()]
        if not len(hard_negatives) or not len(hard_positives):
            continue
        terms.append(torch.log(1 + torch.exp(-pos_weight * (hard_positives - threshold)).sum()) / pos_weight
                     + torch.log(1 + torch.exp(neg_weight * (hard_negatives - threshold)).sum()) / neg_weight)
    return sum(terms) / len(terms) if terms else zero_of(x)


def _anchor_tuples(indices_tuple):
    anchors, positives, negatives = indices_tuple
    return [(a, p, members) for (a, members), p in zip(set_list(anchors, negatives), positives.tolist())]


def _anchor_sets(indices_tuple):
    anchors, positives, negatives = indices_tuple
    return [(a, members, others) for (a, members), (_, others) in zip(set_list(anchors, positives),
                                                                     set_list(anchors, negatives))]


AUTHORS_LOOPS = {
    'multisimilarity': lambda x, labels, tuples, c: multisimilarity_loop(x, labels, c.pos_weight, c.neg_weight,
                                                                          c.margin, c.threshold),
    'margin': lambda x, labels, tuples, c: margin_reference(x, labels.tolist(), triplet_list(tuples), c.beta,
                                                            c.margin, c.nu),
    'triplet': lambda x, labels, tuples, c: triplet_reference(x, triplet_list(tuples), c.margin),
    'contrastive': lambda x, labels, tuples, c: contrastive_reference(x, triplet_list(tuples), c.pos_margin,
                                                                      c.neg_margin),
    'lifted': lambda x, labels, tuples, c: lifted_reference(x, _anchor_sets(tuples), c.margin, c.l2_weight),
    'npair': lambda x, labels, tuples, c: npair_reference(x, _anchor_tuples(tuples), c.l2_weight, c.scale),
    'angular': lambda x, labels, tuples, c: angular_reference(
        x, _anchor_tuples(tuples), math.degrees(math.atan(c.squared_tangent ** 0.5)), c.angular_weight, c.l2_weight),
    'quadruplet': lambda x, labels, tuples, c: quadruplet_reference(x, triplet_list(tuples), tuples[3].tolist(),
                                                                    c.margin_alpha_1, c.margin_alpha_2),
    'snr': lambda x, labels, tuples, c: snr_reference(x, triplet_list(tuples), c.margin, c.reg_lambda),
    'histogram': lambda x, labels, tuples, c: histogram_reference(x, labels, c.nbins),
    'ap_loss': lambda x, labels, tuples, c: smooth_ap_reference(x, labels, c.anneal),
}
"""{loss name: fn(embeddings, labels, indices_tuple, criterion) -> loss}: the per-tuple loop of the authors' file,
with the criterion's settings and the tuples given (quadruplet: four index tensors, the fourth samples last)."""


def given_tuples(criterion, embeddings, labels):
    """Tuples for AUTHORS_LOOPS and the criterion alike: what its miner mines (None for a loss without a miner);
    quadruplet's with the fourth samples it would draw appended."""
    if getattr(criterion, 'miner', None) is None:
        return None
    tuples = criterion.miner(embeddings.detach(), labels)
    if hasattr(criterion, 'fourth_negatives'):
        tuples = (*tuples, criterion.fourth_negatives(tuples[2], len(labels)))
    return tuples


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
