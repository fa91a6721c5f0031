"""Loop references of the proxy and classification losses: one sample (and one class) at a time, in float64.

Written from reading the reference files, sharing no code with criteria/: the OBD-SD authors' criteria/proxynca.py,
softmax.py and arcface.py; for softtriplet, the SoftTriple paper's code (the authors' file crashes); for proxyanchor,
Kim et al.'s Proxy_Anchor. Each is `fn(embeddings, labels, indices_tuple, criterion) -> loss`: it reads the learned
parameters and the settings of `criterion` (so autograd through it gives their gradient too) and ignores
`indices_tuple` (these losses mine nothing). AUTHORS_LOOPS names them by --loss (tests/criteria_references.py keeps
the pair losses' in a dict of the same name).
"""
import torch


def unit(vector):
    """vector / max(‖vector‖, 1e-12): torch.nn.functional.normalize's rule, which the reference files use."""
    return vector / vector.norm().clamp(min=1e-12)


def cross_entropy(logits, label):
    """−log softmax(logits)[label] of one sample's list of scalar logits."""
    return torch.log(sum(torch.exp(logit) for logit in logits)) - logits[label]


def proxynca_loop(x, labels, indices_tuple, criterion):
    """mean_i [ ‖x̂_i − p̂_y‖² + log Σ_{c≠y} exp(−‖x̂_i − p̂_c‖²) ], x̂ and p̂ normalised to length 3."""
    proxies = [3 * unit(proxy) for proxy in criterion.proxies]
    total = 0
    for i, label in enumerate(labels.tolist()):
        sample = 3 * unit(x[i])
        squared = [((sample - proxy) ** 2).sum() for proxy in proxies]
        to_others = sum(torch.exp(-squared[c]) for c in range(len(proxies)) if c != label)
        total = total + squared[label] + torch.log(to_others)
    return total / len(labels)


def softmax_loop(x, labels, indices_tuple, criterion):
    """mean_i CE(x_i · ŵ_c / T): the sample as given, the class map's rows normalised."""
    rows = [unit(row) for row in criterion.class_map]
    total = 0
    for i, label in enumerate(labels.tolist()):
        logits = [(x[i] * row).sum() / criterion.temperature for row in rows]
        total = total + cross_entropy(logits, label)
    return total / len(labels)


def arcface_loop(x, labels, indices_tuple, criterion):
    """mean_i CE(s · cos), every cosine clamped to [1e-10, 1 − 1e-10], the own class's angle widened by m."""
    rows = [unit(row) for row in criterion.class_map]
    total = 0
    for i, label in enumerate(labels.tolist()):
        logits = []
        for c, row in enumerate(rows):
            cosine = (x[i] * row).sum().clamp(1e-10, 1 - 1e-10)
            if c == label:
                cosine = torch.cos(torch.acos(cosine) + criterion.angular_margin)
            logits.append(criterion.feature_scale * cosine)
        total = total + cross_entropy(logits, label)
    return total / len(labels)


def softtriplet_loop(x, labels, indices_tuple, criterion):
    """mean_i CE(λ (S_ic − δ[c = y])) + τ R, S_ic = Σ_k softmax_k(x·w_ck / γ) x·w_ck (Qian et al.'s paper and code)."""
    n_classes, per_class = criterion.n_classes, criterion.n_centroids
    columns = criterion.centroids.T
    centroids = [[unit(columns[c * per_class + k]) for k in range(per_class)] for c in range(n_classes)]
    total = 0
    for i, label in enumerate(labels.tolist()):
        logits = []
        for c in range(n_classes):
            similarities = [(x[i] * centroid).sum() for centroid in centroids[c]]
            weights = [torch.exp(s / criterion.gamma) for s in similarities]
            class_similarity = sum(w * s for w, s in zip(weights, similarities)) / sum(weights)
            margin = criterion.margin_delta if c == label else 0.0
            logits.append(criterion.lam * (class_similarity - margin))
        total = total + cross_entropy(logits, label)
    regulariser = 0
    if per_class > 1:
        for c in range(n_classes):
            for k in range(per_class):
                for m in range(k + 1, per_class):
                    regulariser = regulariser + torch.sqrt(2 + 1e-5 - 2 * (centroids[c][k] * centroids[c][m]).sum())
        regulariser = regulariser / (n_classes * per_class * (per_class - 1))
    return total / len(labels) + criterion.reg_weight * regulariser


def proxyanchor_loop(x, labels, indices_tuple, criterion):
    """Kim et al.: per proxy p, log(1 + Σ_{x of p's class} e^{−α(cos − δ)}) averaged over the proxies with a sample
    in the batch, plus log(1 + Σ_{other x} e^{α(cos + δ)}) averaged over all proxies."""
    alpha, delta = criterion.alpha, criterion.delta
    samples = [unit(sample) for sample in x]
    labels = labels.tolist()
    positive, negative, with_positives = 0, 0, 0
    for c, proxy in enumerate(criterion.proxies):
        proxy = unit(proxy)
        cosines = [(sample * proxy).sum() for sample in samples]
        own = [cosine for cosine, label in zip(cosines, labels) if label == c]
        others = [cosine for cosine, label in zip(cosines, labels) if label != c]
        if own:
            with_positives += 1
            positive = positive + torch.log(1 + sum(torch.exp(-alpha * (cosine - delta)) for cosine in own))
        negative = negative + torch.log(1 + sum((torch.exp(alpha * (cosine + delta)) for cosine in others),
                                                x.new_zeros(())))
    return positive / with_positives + negative / len(criterion.proxies)


AUTHORS_LOOPS = {'proxynca': proxynca_loop, 'softmax': softmax_loop, 'arcface': arcface_loop,
                 'softtriplet': softtriplet_loop, 'proxyanchor': proxyanchor_loop}
"""{--loss: its loop reference}, for the tests and benchmarks/loss_speed.py."""
