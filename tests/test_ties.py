"""Ties never favour the query: against a brute-force reference that ranks other-class samples first among equal
similarities, on embeddings full of exact ties; collapsed and zero embeddings score near 0, not near 1."""
import numpy as np
import pytest
import torch

import evaluation

RETRIEVAL = ['e_recall@1', 'e_recall@2', 'e_recall@4', 'e_recall@8', 'mAP@R', 'mAP@3', 'mAP@20']


def tied_embeddings(n, dim=12, nonzero=4, seed=0):
    """n rows with `nonzero` entries of -1 or +1 each: unit rows of +-0.5 whose cosines are exact multiples of 1/4,
    so that many pairs tie exactly, in float32 as in float64."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, dim), dtype=np.float32)
    for row in rows:
        row[rng.choice(dim, nonzero, replace=False)] = rng.choice([-1.0, 1.0], nonzero)
    return rows


def pessimistic_order(similarities, same_class):
    """Candidates from most to least similar, the other-class ones first among equal similarities."""
    return np.lexsort((same_class, -similarities))


def reference_metrics(queries, query_labels, gallery=None, gallery_labels=None, depths=(3, 20)):
    """Recall@K, MAP@R and MAP@K from their definitions under the pessimistic tie rule (float64, one query at a
    time); without a gallery, leave-one-out."""
    leave_one_out = gallery is None
    if leave_one_out:
        gallery, gallery_labels = queries, query_labels
    unit = lambda rows: rows.astype(np.float64) / np.linalg.norm(rows, axis=1, keepdims=True)  # noqa: E731
    similarities = unit(queries) @ unit(gallery).T
    found, precisions, relevant = [], [], []
    for query, (row, label) in enumerate(zip(similarities, query_labels)):
        candidates = np.arange(len(gallery))
        if leave_one_out:
            candidates = candidates[candidates != query]
        same = gallery_labels[candidates] == label
        order = candidates[pessimistic_order(row[candidates], same)]
        hits = gallery_labels[order] == label
        found.append(np.argmax(hits) if hits.any() else np.inf)
        precisions.append(np.cumsum(hits) / np.arange(1, len(hits) + 1) * hits)
        relevant.append(int(same.sum()))
    results = {f'e_recall@{k}': float(np.mean(np.array(found) < k)) for k in (1, 2, 4, 8, *depths)}

    def mean_ap(depth_of, normaliser_of):
        values = [p[:depth_of(r)].sum() / normaliser_of(r) for p, r in zip(precisions, relevant) if r > 0]
        return float(np.mean(values))

    results['mAP@R'] = mean_ap(lambda r: r, lambda r: r)
    for k in depths:
        results[f'mAP@{k}'] = mean_ap(lambda r, k=k: k, lambda r, k=k: min(r, k))
    return results


def subset(metrics, names):
    return {name: metrics[name] for name in names}


@pytest.mark.parametrize('chunk_size', [1, 7, 1024])
@pytest.mark.parametrize('seed', [0, 1])
def test_leave_one_out_metrics_equal_the_pessimistic_reference_on_tied_embeddings(chunk_size, seed):
    features = tied_embeddings(90, seed=seed)
    labels = np.random.default_rng(seed).integers(0, 9, 90)
    sims = features @ features.T / 4
    assert len(np.unique(sims)) < 10, 'the embeddings tie: every cosine is one of few values'
    ours = evaluation.compute_metrics(features, labels, RETRIEVAL, chunk_size=chunk_size)
    assert ours == pytest.approx(subset(reference_metrics(features, labels), RETRIEVAL), abs=1e-12)


@pytest.mark.parametrize('chunk_size', [1, 5, 1024])
def test_query_gallery_metrics_equal_the_pessimistic_reference_on_tied_embeddings(chunk_size):
    rng = np.random.default_rng(3)
    queries, gallery = tied_embeddings(40, seed=4), tied_embeddings(70, seed=5)
    query_labels, gallery_labels = rng.integers(0, 8, 40), rng.integers(0, 8, 70)
    ours = evaluation.compute_metrics(queries, query_labels, RETRIEVAL, chunk_size=chunk_size,
                                      gallery_features=gallery, gallery_labels=gallery_labels)
    assert ours == pytest.approx(subset(reference_metrics(queries, query_labels, gallery, gallery_labels), RETRIEVAL),
                                 abs=1e-12)


@pytest.mark.parametrize('make', [np.ones, np.zeros], ids=['identical', 'zero'])
def test_collapsed_embeddings_score_zero(make):
    labels = np.repeat(np.arange(10), 10)
    metrics = evaluation.compute_metrics(make((100, 16), dtype=np.float32), labels, RETRIEVAL + ['nmi'])
    # 90 other-class samples tie with the 9 same-class ones and rank before them.
    assert {name: metrics[name] for name in ('e_recall@1', 'e_recall@8', 'mAP@3')} == {
        'e_recall@1': 0.0, 'e_recall@8': 0.0, 'mAP@3': 0.0}
    assert metrics['mAP@R'] == 0.0 and metrics['mAP@20'] == 0.0, 'no same-class sample among the 20 nearest'
    assert metrics['nmi'] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize('make', [np.ones, np.zeros, lambda shape, dtype: tied_embeddings(shape[0])],
                         ids=['identical', 'zero', 'tied'])
def test_one_class_has_no_negative_to_rank_first_so_every_metric_is_one(make):
    """With a single class every neighbour is a positive: the rule has nothing to put first, even for collapsed
    embeddings, and the metrics are 1 by definition (no crash on one cluster)."""
    metrics = evaluation.compute_metrics(make((30, 12), dtype=np.float32), np.zeros(30, dtype=int),
                                         RETRIEVAL + ['nmi', 'f1'])
    assert metrics == {name: pytest.approx(1.0) for name in RETRIEVAL + ['nmi', 'f1']}


def test_a_tie_with_a_negative_is_a_miss_and_a_strictly_better_positive_a_hit():
    features = np.array([[1, 0], [1, 1], [1, -1], [-1, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 0])
    # Query 0: its positive [1, 1] ties the negative [1, -1]: rank 1. Query 1: its positive [1, 0] first: rank 0.
    # Query 2: no positive. Query 3: its positive [1, 1] ties the negative [1, -1]: rank 1.
    recall = evaluation.compute_metrics(features, labels, ['e_recall@1', 'e_recall@2'])
    assert recall == {'e_recall@1': 0.25, 'e_recall@2': 0.75}
    features[2] = [1, -1.001]  # the negative now a little less similar to query 0, a little more to query 3
    assert evaluation.compute_metrics(features, labels, ['e_recall@1'])['e_recall@1'] == 0.5


def test_exact_duplicates_of_the_query_still_count_as_neighbours():
    features = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    assert evaluation.compute_metrics(features, labels, ['e_recall@1', 'mAP@R']) == {'e_recall@1': 1.0,
                                                                                    'mAP@R': 1.0}


def test_similarities_one_float32_step_apart_are_ordered_not_tied():
    """The tie rule must not reorder samples whose similarities differ by the smallest float32 step."""
    from evaluation.retrieval import rank_queries

    below = np.nextafter(np.float32(0.6), np.float32(0))
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gallery = torch.tensor([[0.6, 0.0], [below, 0.0]])
    assert (gallery @ queries[0])[0] > (gallery @ queries[0])[1]
    retrieval = rank_queries(queries, torch.tensor([0, 1]), depth=2, gallery_features=gallery,
                             gallery_labels=torch.tensor([0, 1]))
    assert retrieval.best_positive_rank.tolist() == [0, 1]
    assert retrieval.positive_ranks.tolist() == [[0], [1]]


@pytest.mark.parametrize('depth', [3, 30, 300], ids=['adjacent blocks', 'strided blocks', 'whole rows'])
@pytest.mark.parametrize('kind', ['random', 'tied'])
def test_candidates_hold_every_value_above_a_floor_at_most_the_kth_largest(depth, kind):
    """_candidates: entries of the row (each column once), among them every entry above the floor, which is at most
    the row's depth-th largest value (ties across the block boundaries included)."""
    from evaluation.retrieval import _candidates

    rng = np.random.default_rng(depth)
    if kind == 'random':
        sims = torch.from_numpy(rng.standard_normal((40, 1000 * 3 + 7)).astype(np.float32))
    else:  # a few distinct values: ties everywhere
        sims = torch.from_numpy(rng.integers(0, 5, (40, 1000 * 3 + 7)).astype(np.float32))
    parts, floor = _candidates(sims, depth)
    candidates = torch.cat(parts, 1)
    assert (candidates.shape[1] < sims.shape[1]) == (depth < 300)
    kth = sims.topk(depth, dim=1).values[:, -1]
    assert (floor <= kth).all()
    for row, row_candidates, row_floor in zip(sims, candidates, floor):
        above = np.sort(row[row > row_floor].numpy())
        assert np.array_equal(np.sort(row_candidates[row_candidates > row_floor].numpy()), above)
        assert np.isin(row_candidates.numpy(), row.numpy()).all()
        assert (row_candidates == row_floor).sum() <= (row == row_floor).sum(), 'no column twice'


def test_classes_of_many_samples_count_by_sorting_and_keep_the_tie_rule():
    """More than 32 same-class samples per query: their ranks among the candidates are counted by a sort and a
    search."""
    features = tied_embeddings(2000, dim=16, seed=11)
    labels = np.random.default_rng(11).integers(0, 45, 2000)  # about 44 samples a class
    names = ['mAP@R', 'mAP@50', 'e_recall@1']
    ours = evaluation.compute_metrics(features, labels, names, chunk_size=700)
    assert ours == pytest.approx(subset(reference_metrics(features, labels, depths=(50,)), names), abs=1e-12)


@pytest.mark.parametrize('names', [['e_recall@1', 'e_recall@5', 'e_recall@40', 'mAP@2'],
                                   ['mAP@R', 'mAP@40', 'e_recall@40']], ids=['adjacent blocks', 'strided blocks'])
def test_the_block_search_of_large_galleries_keeps_the_tie_rule(names):
    """1,200 samples: the ranks are counted among candidate blocks (_candidates), ties at the floor included; Recall@K
    beyond the depth (e_recall@5 and @40 with mAP@2) takes its best ranks from the counts where they give them and
    from a pass over the other rows."""
    features = tied_embeddings(1200, dim=16, seed=7)
    labels = np.random.default_rng(7).integers(0, 30, 1200)
    ours = evaluation.compute_metrics(features, labels, names, chunk_size=500)
    assert ours == pytest.approx(subset(reference_metrics(features, labels, depths=(2, 5, 40)), names), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (benchmarks/gpu_check.sh runs it)')
def test_gpu_ranking_applies_the_same_tie_rule():
    features = tied_embeddings(90)
    labels = np.random.default_rng(0).integers(0, 9, 90)
    on_gpu = evaluation.compute_metrics(features, labels, RETRIEVAL, use_gpu=True)
    assert on_gpu == pytest.approx(subset(reference_metrics(features, labels), RETRIEVAL), abs=1e-12)
    names = ['mAP', 'mAP_c', 'mAP_1000', 'r_precision', 'mrr', 'precision@5', 'e_recall@40']
    assert evaluation.compute_metrics(features, labels, names, use_gpu=True) == evaluation.compute_metrics(
        features, labels, names)


@pytest.mark.parametrize('names', [RETRIEVAL, ['e_recall@1', 'e_recall@40', 'mAP@2', 'mAP_c', 'mAP', 'mrr']])
def test_the_torch_paths_that_cuda_takes_give_the_numpy_paths_results(monkeypatch, names):
    """On CUDA the products, counts and sorts run in torch: the same paths, forced on the CPU, give the same values
    (the GPU itself: test_gpu_ranking_applies_the_same_tie_rule, where there is one)."""
    from evaluation import retrieval

    features = tied_embeddings(1200, dim=16, seed=12)
    labels = np.random.default_rng(12).integers(0, 15, 1200)
    by_numpy = evaluation.compute_metrics(features, labels, names, chunk_size=500)
    monkeypatch.setattr(retrieval, 'by_numpy', lambda tensor: False)
    assert evaluation.compute_metrics(features, labels, names, chunk_size=500) == by_numpy
