"""Every metric name the authors' evaluation accepts, against an independent reference of their files' math (written
from reading them) and against the values their files computed on fixed embeddings (tests/fixtures/authors_metrics.*),
on random and on tied embeddings; the peers' metrics against pytorch-metric-learning and OML's definition; the
degenerate cases."""
import json
import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from scipy.spatial import distance
from scipy.stats import entropy
from sklearn.metrics import normalized_mutual_info_score

import evaluation
from evaluation import products
from runs import ROOT
from test_ties import tied_embeddings

FIXTURES = f'{ROOT}/tests/fixtures'
SETS = ('random', 'small', 'singletons')
AUTHORS_RETRIEVAL = ['e_recall@1', 'e_recall@2', 'e_recall@10', 'c_recall@1', 'c_recall@2', 'c_recall@10',
                     'mAP', 'mAP_c', 'mAP_1000', 'mAP_lim', 'c_mAP', 'c_mAP_c', 'c_mAP_1000', 'c_mAP_lim']
SPACE = ['dists@intra', 'dists@inter', 'dists@intra_over_inter', 'rho_spectrum@0', 'rho_spectrum@-1',
         'rho_spectrum@1', 'rho_spectrum@2', 'rho_spectrum@10']
PEERS = ['r_precision', 'mrr', 'precision@1', 'precision@5', 'precision@40']


def fixed_set(name):
    arrays = np.load(f'{FIXTURES}/authors_metrics.npz')
    return arrays[f'{name}_features'], arrays[f'{name}_labels']


def authors_values(name):
    with open(f'{FIXTURES}/authors_metrics.json') as file:
        return json.load(file)['values'][name]


# --- The reference: the authors' metrics/ files, written anew from their math, one query at a time in float64.

def neighbours(features, query):
    """All other samples, most similar (cosine) first; among equal similarities the other-class ones first (our tie
    rule; the authors' faiss orders ties arbitrarily)."""
    unit = features.astype(np.float64) / np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
    return unit @ unit[query], np.delete(np.arange(len(features)), query)


def ranked(features, labels, query):
    similarities, others = neighbours(features, query)
    same = labels[others] == labels[query]
    return others[np.lexsort((same, -similarities[others]))]


def authors_recall(features, labels, k):
    """e_recall.py: the share of queries whose label is among the labels of their k nearest (the query dropped)."""
    return float(np.mean([labels[q] in labels[ranked(features, labels, q)[:k]] for q in range(len(labels))]))


AUTHORS_DEPTH = {'mAP': lambda freq, n: n, 'mAP_c': lambda freq, n: freq, 'mAP_1000': lambda freq, n: 1000,
                 'mAP_lim': lambda freq, n: min(1023, n)}
"""How many neighbours each of their files reads per query: faiss is asked for depth + 1 and the first (the query)
dropped; freq is the size of the query's class, the query included."""


def authors_map(features, labels, name, faiss_padding=False):
    """mAP.py, mAP_c.py, mAP_1000.py, mAP_lim.py (and their c_ twins): for every query, the labels of its first
    `depth` neighbours; sum of (hits so far / position) at each hit, divided by freq; the mean over every query.
    With more neighbours asked for than there are other samples, faiss fills the rest with index -1, which their
    files read as the label of the last sample: `faiss_padding` reproduces that bug."""
    n = len(labels)
    average_precisions = []
    for query in range(n):
        freq = int(np.sum(labels == labels[query]))
        depth = AUTHORS_DEPTH[name](freq, n)
        row = labels[ranked(features, labels, query)][:depth]
        if faiss_padding:
            row = np.concatenate([row, np.full(depth - len(row), labels[-1])])
        hits = row == labels[query]
        average_precisions.append(np.sum(np.cumsum(hits) * hits / np.arange(1, len(row) + 1)) / freq)
    return float(np.mean(average_precisions))


def authors_dists(features, labels, mode, index_bug=False):
    """dists.py: intra, the mean over classes of the mean scipy cosine distance between two different members (the
    pairwise sum, diagonal included, over n^2 - n; a class where it is nan or inf, e.g. one sample, takes the
    largest of the others: their code indexes with 1 - isnan(...), i.e. positions 0 and 1, which `index_bug`
    reproduces); inter, the mean cosine distance between two normalised class means."""
    classes = np.unique(labels)
    intra = []
    for label in classes:
        members = features[labels == label].astype(np.float64)
        with np.errstate(invalid='ignore', divide='ignore'):
            pairwise = distance.cdist(members, members, 'cosine')
            intra.append(np.sum(pairwise) / (len(members) ** 2 - len(members)))
    intra = np.array(intra)
    fill = np.max(intra[(1 - np.isnan(intra)).astype(int)]) if index_bug else np.max(intra[np.isfinite(intra)])
    intra[~np.isfinite(intra)] = fill
    means = np.array([features[labels == label].astype(np.float64).mean(0) for label in classes])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    pairwise = distance.cdist(means, means, 'cosine')
    inter = np.sum(pairwise) / (len(classes) ** 2 - len(classes))
    return {'intra': np.mean(intra), 'inter': inter, 'intra_over_inter': np.mean(intra) / max(inter, 1e-8)}[mode]


def authors_rho(features, mode):
    """rho_spectrum.py: the D - 1 largest singular values (their TruncatedSVD keeps embed_dim - 1; here from the
    eigenvalues of X^T X), from index |mode| - 1 on, normalised; mode < 0 KL(spectrum || uniform), > 0
    KL(uniform || spectrum), 0 the spectrum."""
    features = features.astype(np.float64)
    values = np.sqrt(np.clip(np.linalg.eigvalsh(features.T @ features), 0, None))[::-1][:features.shape[1] - 1]
    if mode:
        values = values[abs(mode) - 1:]
    spectrum = values / values.sum()
    uniform = np.full(len(values), 1 / len(values))
    if mode == 0:
        return list(spectrum)
    return float(entropy(spectrum, uniform) if mode < 0 else entropy(uniform, spectrum))


def reference(features, labels, name):
    """The reference value of one authors' metric name."""
    stem, _, parameter = name.removeprefix('c_').partition('@')
    if stem in ('e_recall', 'recall'):
        return authors_recall(features, labels, int(parameter))
    if stem in AUTHORS_DEPTH or name == 'c_mAP':
        return authors_map(features, labels, stem)
    if stem == 'dists':
        return authors_dists(features, labels, parameter)
    return authors_rho(features, int(parameter))


def assert_close(ours, expected, name):
    if name.startswith('rho_spectrum@0'):
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-7, err_msg=name)
    elif name.startswith('rho_spectrum'):  # their SVD is randomised, in float32
        assert ours == pytest.approx(expected, rel=2e-5, abs=1e-9), name
    else:
        assert ours == pytest.approx(expected, rel=1e-8, abs=1e-12), name


# --- Ours against the reference and against the authors' own values.

@pytest.mark.parametrize('set_name', SETS)
def test_every_authors_name_gives_the_reference_value(set_name):
    features, labels = fixed_set(set_name)
    names = AUTHORS_RETRIEVAL + SPACE
    ours = evaluation.compute_metrics(features, labels, names)
    assert list(ours) == names
    for name in names:
        if name == 'rho_spectrum@10' and features.shape[1] < 11:
            assert math.isnan(ours[name]), 'no singular value from the 10th on'
        else:
            assert_close(ours[name], reference(features, labels, name), name)


@pytest.mark.parametrize('set_name', SETS)
def test_the_authors_files_computed_the_reference_values_where_their_bugs_do_not_reach(set_name):
    """The authors' values on the fixed sets equal ours and the reference, except where one of their bugs shows, and
    there the reference with that bug reproduces their value."""
    features, labels = fixed_set(set_name)
    theirs = authors_values(set_name)
    ours = evaluation.compute_metrics(features, labels, list(theirs))
    padded = {'mAP'} | ({'mAP_1000', 'mAP_lim', 'c_mAP_1000', 'c_mAP_lim'} if len(labels) <= 1023 else set())
    for name, value in theirs.items():
        if name.removeprefix('c_') in padded:
            stem = name.removeprefix('c_')
            # their mAP reads the Euclidean order of faiss, equal to the cosine one up to float rounding
            assert authors_map(features, labels, stem, faiss_padding=True) == pytest.approx(value, rel=1e-7), name
            assert ours[name] == pytest.approx(authors_map(features, labels, stem), rel=1e-12), name
            assert ours[name] < value, 'the padding only adds hits'
        elif set_name == 'singletons' and name in ('dists@intra', 'dists@intra_over_inter'):
            assert math.isnan(value), 'their index bug: the one-sample class 0 makes the fill value nan'
            assert math.isnan(authors_dists(features, labels, name.split('@')[1], index_bug=True))
            assert math.isfinite(ours[name])
        elif name == 'rho_spectrum@10' and features.shape[1] < 11:
            assert value == 0.0 and math.isnan(ours[name]), 'theirs: KL of two empty distributions'
        else:
            assert_close(ours[name], value, name)
            if name.startswith(('e_recall', 'c_recall', 'mAP', 'c_mAP')):
                assert ours[name] == pytest.approx(value, rel=1e-7), name


def test_their_map_1000_exceeds_one_on_300_samples_and_ours_does_not():
    features, labels = fixed_set('small')
    assert authors_values('small')['mAP_1000'] > 1.5
    ours = evaluation.compute_metrics(features, labels, ['mAP_1000', 'mAP_lim', 'mAP'])
    assert 0 < ours['mAP_1000'] == ours['mAP_lim'] == ours['mAP'] < 1, 'all 299 other samples, nothing more'


def test_cosine_and_euclidean_names_agree_as_every_ranking_is_by_cosine_here():
    features, labels = fixed_set('random')
    ours = evaluation.compute_metrics(features, labels, AUTHORS_RETRIEVAL)
    for name in AUTHORS_RETRIEVAL:
        if name.startswith('c_'):
            euclidean = 'e_' + name[2:] if name.startswith('c_recall') else name.removeprefix('c_')
            assert ours[name] == ours[euclidean], name


def test_map_c_keeps_the_authors_class_size_and_differs_from_map_at_r():
    """Their mAP_c reads the R + 1 nearest and divides by R + 1 (the query counted in its class): a perfect ranking
    scores R / (R + 1) per query, where MAP@R scores 1."""
    features = np.repeat(np.eye(4, 8, dtype=np.float32), [2, 3, 4, 5], axis=0)
    features += 1e-3 * np.random.default_rng(0).standard_normal(features.shape).astype(np.float32)
    labels = np.repeat(np.arange(4), [2, 3, 4, 5])
    ours = evaluation.compute_metrics(features, labels, ['mAP_c', 'mAP@R', 'mAP'])
    expected = np.mean(np.repeat([1 / 2, 2 / 3, 3 / 4, 4 / 5], [2, 3, 4, 5]))
    assert ours == {'mAP_c': pytest.approx(expected), 'mAP@R': 1.0, 'mAP': pytest.approx(expected)}


@pytest.mark.parametrize('chunk_size', [7, 1024])
@pytest.mark.parametrize('seed', [0, 1])
def test_authors_retrieval_metrics_follow_the_tie_rule_on_tied_embeddings(seed, chunk_size):
    features = tied_embeddings(90, seed=seed)
    labels = np.random.default_rng(seed).integers(0, 9, 90)
    names = [name for name in AUTHORS_RETRIEVAL]
    ours = evaluation.compute_metrics(features, labels, names, chunk_size=chunk_size)
    for name in names:
        assert ours[name] == pytest.approx(reference(features, labels, name), abs=1e-12), name


def test_authors_map_over_every_sample_counts_past_the_sorting_depth_on_ties():
    """mAP ranks whole rows by counting (no sort): on 1,100 tied embeddings, as the reference."""
    features = tied_embeddings(1100, dim=16, seed=3)
    labels = np.random.default_rng(3).integers(0, 40, 1100)
    ours = evaluation.compute_metrics(features, labels, ['mAP', 'mAP_1000', 'mAP_lim'], chunk_size=300)
    for name in ours:
        assert ours[name] == pytest.approx(authors_map(features, labels, name), abs=1e-12), name


def test_authors_map_of_classes_of_many_samples_counts_whole_rows_by_sorting():
    """More than 32 same-class samples per query: whole rows counted by a sort and a search."""
    features = tied_embeddings(400, dim=16, seed=11)
    labels = np.random.default_rng(11).integers(0, 6, 400)  # about 66 samples a class
    ours = evaluation.compute_metrics(features, labels, ['mAP', 'mAP_c'], chunk_size=150)
    for name in ours:
        assert ours[name] == pytest.approx(authors_map(features, labels, name), abs=1e-12), name


# --- The peers' metrics.

def peers_reference(features, labels, name):
    """R-precision, MRR (both as pytorch-metric-learning) and precision@K (OML: hits among the K nearest over
    min(K, R)), over the queries with a same-class sample, under our tie rule."""
    values = []
    for query in range(len(labels)):
        relevant = int(np.sum(labels == labels[query])) - 1
        if relevant == 0:
            continue
        hits = labels[ranked(features, labels, query)] == labels[query]
        if name == 'r_precision':
            values.append(hits[:relevant].sum() / relevant)
        elif name == 'mrr':
            values.append(1 / (np.argmax(hits) + 1))
        else:
            k = int(name.split('@')[1])
            values.append(hits[:k].sum() / min(k, relevant))
    return float(np.mean(values))


def test_peers_metrics_agree_with_pytorch_metric_learning_on_tie_free_embeddings():
    features, labels = fixed_set('singletons')
    features = evaluation._normalised(features)  # pytorch-metric-learning ranks by L2 distance: the same order
    ours = evaluation.compute_metrics(features, labels, ['r_precision', 'mrr', 'precision@1', 'ami', 'nmi'])
    assignment = products.kmeans_clustering(features, len(np.unique(labels)))[0]
    calculator = AccuracyCalculator(include=('r_precision', 'mean_reciprocal_rank', 'precision_at_1', 'AMI', 'NMI'),
                                    k=None, device=torch.device('cpu'),
                                    kmeans_func=lambda *_: torch.from_numpy(assignment))
    theirs = calculator.get_accuracy(features, labels)
    assert ours['r_precision'] == pytest.approx(theirs['r_precision'], rel=1e-12)
    assert ours['mrr'] == pytest.approx(theirs['mean_reciprocal_rank'], rel=1e-7), 'theirs in float32'
    assert ours['mrr'] == pytest.approx(peers_reference(features, labels, 'mrr'), rel=1e-12)
    assert ours['precision@1'] == pytest.approx(theirs['precision_at_1'], rel=1e-12)
    assert ours['ami'] == pytest.approx(theirs['AMI'], rel=1e-12)
    assert ours['nmi'] == pytest.approx(theirs['NMI'], rel=1e-12)


@pytest.mark.parametrize('set_name', SETS)
def test_peers_metrics_equal_their_definitions(set_name):
    """precision@K as OML defines it (checked against OML 4.0.0's calc_precision outside the suite: OML needs
    numpy < 2, so it is not installed here), R-precision and MRR as pytorch-metric-learning."""
    features, labels = fixed_set(set_name)
    ours = evaluation.compute_metrics(features, labels, PEERS)
    for name in PEERS:
        assert ours[name] == pytest.approx(peers_reference(features, labels, name), rel=1e-12), name


@pytest.mark.parametrize('chunk_size', [5, 1024])
def test_peers_metrics_follow_the_tie_rule_on_tied_embeddings(chunk_size):
    features = tied_embeddings(90, seed=4)
    labels = np.random.default_rng(4).integers(0, 9, 90)
    ours = evaluation.compute_metrics(features, labels, PEERS, chunk_size=chunk_size)
    for name in PEERS:
        assert ours[name] == pytest.approx(peers_reference(features, labels, name), abs=1e-12), name


# --- Clustering: the cosine assignment.

def test_cosine_clustering_assigns_to_the_nearest_centroid_direction():
    """c_nmi and c_f1 score the same k-means as nmi and f1, each sample assigned to the centroid direction of largest
    inner product (the authors' fixed: they reused the Euclidean centroids)."""
    features, labels = fixed_set('random')
    unit = evaluation._normalised(features)
    ours = evaluation.compute_metrics(features, labels, ['nmi', 'c_nmi', 'f1', 'c_f1'], seed=3)
    assignment, centroids = products.kmeans_clustering(unit, len(np.unique(labels)), seed=3)
    directions = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    cosine = np.argmax(unit @ directions.T, axis=1)
    assert (cosine != assignment).any(), 'the two assignments differ on these embeddings'
    assert ours['c_nmi'] == pytest.approx(normalized_mutual_info_score(labels, cosine))
    assert ours['nmi'] == pytest.approx(normalized_mutual_info_score(labels, assignment))
    assert ours['c_f1'] == pytest.approx(evaluation.clustering.pair_f1(labels, cosine))


def test_nothing_that_is_not_asked_for_is_computed(monkeypatch):
    features, labels = fixed_set('small')
    built = []
    for name, builder in products.PRODUCTS.items():
        monkeypatch.setitem(products.PRODUCTS, name, lambda inputs, requested, builder=builder, name=name: (
            built.append(name), builder(inputs, requested))[1])
    evaluation.compute_metrics(features, labels, ['dists@intra', 'rho_spectrum@1'])
    assert built == ['embeddings']
    built.clear()
    spy = []
    monkeypatch.setattr(products, 'cosine_assignment', lambda *arguments: spy.append(1))
    evaluation.compute_metrics(features, labels, ['nmi', 'e_recall@1'])
    assert sorted(built) == ['clusters', 'ranks'] and not spy, 'no cosine assignment without a c_ clustering metric'


# --- Degenerate inputs.

def test_collapsed_embeddings_score_near_zero_and_have_no_spread():
    labels = np.repeat(np.arange(10), 10)
    names = ['mAP', 'mAP_c', 'mAP_1000', 'mAP_lim', 'c_recall@1', 'r_precision', 'precision@5', 'mrr',
             'dists@intra', 'dists@inter', 'dists@intra_over_inter', 'rho_spectrum@0', 'rho_spectrum@-1',
             'rho_spectrum@1']
    ours = evaluation.compute_metrics(np.ones((100, 16), dtype=np.float32), labels, names)
    # 90 other-class samples tie with the 9 same-class ones and rank before them: ranks 90..98.
    expected_map = np.sum(np.arange(1, 10) / np.arange(91, 100)) / 10
    assert ours['mAP'] == ours['mAP_1000'] == ours['mAP_lim'] == pytest.approx(expected_map)
    assert ours['mAP_c'] == ours['c_recall@1'] == ours['r_precision'] == ours['precision@5'] == 0
    assert ours['mrr'] == pytest.approx(1 / 91)
    assert ours['dists@intra'] == pytest.approx(0, abs=1e-12) and ours['dists@inter'] == pytest.approx(0, abs=1e-12)
    assert ours['dists@intra_over_inter'] == pytest.approx(0, abs=1e-6)
    assert ours['rho_spectrum@0'] == [1.0] + [0.0] * 14, 'rank one: one singular value'
    assert ours['rho_spectrum@-1'] == pytest.approx(math.log(15))
    assert ours['rho_spectrum@1'] == math.inf, 'KL(uniform || a spectrum with zeros)'


def test_zero_embeddings_score_zero_and_their_directions_are_undefined():
    labels = np.repeat(np.arange(10), 10)
    names = ['mAP', 'mAP_c', 'c_recall@1', 'r_precision', 'dists@intra', 'dists@inter', 'rho_spectrum@-1',
             'rho_spectrum@1']
    ours = evaluation.compute_metrics(np.zeros((100, 16), dtype=np.float32), labels, names)
    assert ours['mAP_c'] == ours['c_recall@1'] == ours['r_precision'] == 0 and ours['mAP'] < 0.05
    assert all(math.isnan(ours[name]) for name in names[4:]), 'no direction, no spectrum'


@pytest.mark.parametrize('make', [np.ones, np.zeros, lambda shape, dtype: tied_embeddings(shape[0])],
                         ids=['identical', 'zero', 'tied'])
def test_one_class_every_neighbour_is_a_hit(make):
    features = make((30, 12), dtype=np.float32)
    ours = evaluation.compute_metrics(features, np.zeros(30, dtype=int),
                                      ['mAP', 'mAP_c', 'mAP_1000', 'c_recall@1', 'r_precision', 'mrr', 'precision@5',
                                       'ami', 'c_nmi', 'c_f1', 'dists@inter'])
    assert ours['mAP'] == ours['mAP_c'] == ours['mAP_1000'] == pytest.approx(29 / 30), 'the query counted in freq'
    assert ours['c_recall@1'] == ours['r_precision'] == ours['mrr'] == ours['precision@5'] == 1.0
    assert ours['ami'] == pytest.approx(1.0) and ours['c_nmi'] == pytest.approx(1.0) and ours['c_f1'] == 1.0
    assert math.isnan(ours['dists@inter']), 'one class: no pair of class means'


def test_duplicates_of_the_query_are_neighbours_and_singletons_score_zero_in_the_authors_map():
    features = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 2])
    ours = evaluation.compute_metrics(features, labels, ['mAP_c', 'mAP', 'r_precision', 'mrr', 'dists@intra'])
    # queries 0-3 find their duplicate first: AP 1/2 each (freq 2); query 4 is alone: AP 0, counted by the authors.
    assert ours['mAP_c'] == ours['mAP'] == pytest.approx(4 * 0.5 / 5)
    assert ours['r_precision'] == ours['mrr'] == 1.0, 'the peers leave the lone query out'
    assert ours['dists@intra'] == pytest.approx(0, abs=1e-12), 'the one-sample class takes the largest other value'


def test_fewer_samples_than_the_depth_read_every_sample_once():
    features, labels = tied_embeddings(50, seed=5), np.random.default_rng(5).integers(0, 5, 50)
    ours = evaluation.compute_metrics(features, labels, ['mAP', 'mAP_1000', 'mAP_lim', 'mAP@1000'])
    assert ours['mAP'] == ours['mAP_1000'] == ours['mAP_lim'] <= 1
    assert ours['mAP'] == pytest.approx(authors_map(features, labels, 'mAP'), abs=1e-12)


def test_rho_spectrum_modes_and_spectrum_beyond_the_dimension():
    features, labels = fixed_set('random')  # 16-D: 15 singular values
    ours = evaluation.compute_metrics(features, labels, ['rho_spectrum@0', 'rho_spectrum@15', 'rho_spectrum@16',
                                                         'rho_spectrum@-16'])
    assert len(ours['rho_spectrum@0']) == 15 and sum(ours['rho_spectrum@0']) == pytest.approx(1)
    assert ours['rho_spectrum@15'] == 0.0, 'one value left: KL of a single point mass is 0'
    assert math.isnan(ours['rho_spectrum@16']) and math.isnan(ours['rho_spectrum@-16']), 'nothing left'
    few = evaluation.compute_metrics(features[:5], labels[:5], ['rho_spectrum@0', 'rho_spectrum@1'])
    assert few['rho_spectrum@0'][5:] == [0.0] * 10 and few['rho_spectrum@1'] == math.inf, '5 samples: rank 5'


def test_query_gallery_protocol_normalises_the_authors_map_by_the_gallery_class_size():
    """No counterpart in the authors' code: the query is not in the gallery, so its class size there is R."""
    rng = np.random.default_rng(8)
    queries, gallery = tied_embeddings(30, seed=8), tied_embeddings(50, seed=9)
    query_labels, gallery_labels = rng.integers(0, 6, 30), rng.integers(0, 5, 50)
    ours = evaluation.compute_metrics(queries, query_labels, ['mAP_c', 'mAP@R', 'dists@intra'],
                                      gallery_features=gallery, gallery_labels=gallery_labels)
    assert ours['mAP_c'] == ours['mAP@R'], 'the R nearest, divided by R, lone queries left out'
    both = evaluation.compute_metrics(np.concatenate([queries, gallery]),
                                      np.concatenate([query_labels, gallery_labels]), ['dists@intra'])
    assert ours['dists@intra'] == both['dists@intra'], 'measured on query and gallery together'


def test_the_metric_table_of_docs_evaluation_names_every_metric_once():
    import re

    with open(f'{ROOT}/docs/evaluation.md') as file:
        text = file.read()
    section = text[text.index('## Metrics'):text.index('A metric is one entry of `METRICS`')]
    named = [name for row in section.splitlines() if row.startswith('| `')
             for name in re.findall(r'`([^`]+)`', row.split(' | ')[0])]
    assert sorted(named) == sorted(metric.name for metric in evaluation.METRICS)
