"""Evaluation metrics against brute-force references, sklearn and pytorch-metric-learning."""
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.metrics import normalized_mutual_info_score

import datasets
import evaluation
from datasets import transforms
from datasets.transforms import to_network_input
from evaluation import clustering
from plumbing.errors import UserError


def normalised_random_features(n, dim=8, seed=0):
    features = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def clustered_labels(n, n_classes, seed=0, singletons=0):
    """n labels: n_classes classes of >= 2 samples, plus `singletons` one-sample classes."""
    rng = np.random.default_rng(seed)
    shared = np.concatenate([np.arange(n_classes).repeat(2),
                             rng.integers(0, n_classes, n - 2 * n_classes - singletons)])
    return rng.permutation(np.concatenate([shared, n_classes + np.arange(singletons)]))


def ranked_neighbours(features):
    """For each query, all other samples from most to least similar (brute force)."""
    sims = features.astype(np.float64) @ features.T.astype(np.float64)
    order = np.argsort(-sims, axis=1, kind='stable')
    return [row[row != query] for query, row in enumerate(order)]


def brute_force_recall(features, labels, k):
    neighbours = ranked_neighbours(features)
    return np.mean([np.any(labels[row[:k]] == labels[q]) for q, row in enumerate(neighbours)])


def brute_force_map(features, labels, cutoff=None):
    """MAP@R (cutoff None) or MAP@cutoff, normaliser min(R, cutoff), from the definition."""
    average_precisions = []
    for query, row in enumerate(ranked_neighbours(features)):
        n_relevant = np.sum(labels == labels[query]) - 1
        if n_relevant == 0:
            continue
        depth = n_relevant if cutoff is None else cutoff
        hits, total = 0, 0.0
        for position, neighbour in enumerate(row[:depth], start=1):
            if labels[neighbour] == labels[query]:
                hits += 1
                total += hits / position
        average_precisions.append(total / min(n_relevant, depth))
    return np.mean(average_precisions)


@pytest.mark.parametrize('chunk_size', [1, 8, 1000])
def test_recall_matches_brute_force_across_chunks(chunk_size):
    features = normalised_random_features(53)
    labels = clustered_labels(53, n_classes=9, singletons=3)
    ks = [1, 2, 4, 8, 52, 100]
    metrics = evaluation.compute_metrics(features, labels, [f'e_recall@{k}' for k in ks],
                                         chunk_size=chunk_size)
    for k in ks:
        assert metrics[f'e_recall@{k}'] == pytest.approx(brute_force_recall(features, labels, k))


def test_singleton_queries_count_as_misses():
    features = normalised_random_features(6)
    labels = np.array([0, 0, 1, 2, 3, 4])
    metrics = evaluation.compute_metrics(features, labels, ['e_recall@5'])
    assert metrics['e_recall@5'] == pytest.approx(2 / 6)


def test_query_never_retrieves_itself_but_finds_its_duplicate():
    features = normalised_random_features(4)
    features[1] = features[0]
    labels = np.array([0, 0, 1, 2])
    metrics = evaluation.compute_metrics(features, labels, ['e_recall@1', 'mAP@R'])
    assert metrics == {'e_recall@1': 0.5, 'mAP@R': 1.0}


@pytest.mark.parametrize('chunk_size', [5, 1000])
def test_map_at_r_matches_definition_and_pytorch_metric_learning(chunk_size):
    features = normalised_random_features(60, seed=1)
    labels = clustered_labels(60, n_classes=7, seed=1)
    ours = evaluation.compute_metrics(features, labels, ['mAP@R'], chunk_size=chunk_size)['mAP@R']
    calculator = AccuracyCalculator(include=('mean_average_precision_at_r',),
                                    k='max_bin_count', device=torch.device('cpu'))
    theirs = calculator.get_accuracy(features, labels, features, labels,
                                     ref_includes_query=True)['mean_average_precision_at_r']
    assert ours == pytest.approx(brute_force_map(features, labels))
    assert ours == pytest.approx(theirs)


def test_map_at_r_leaves_out_singleton_queries():
    features = normalised_random_features(40, seed=2)
    labels = clustered_labels(40, n_classes=5, seed=2, singletons=4)
    ours = evaluation.compute_metrics(features, labels, ['mAP@R'], chunk_size=16)['mAP@R']
    assert ours == pytest.approx(brute_force_map(features, labels))


def test_map_is_nan_without_any_same_class_pair():
    metrics = evaluation.compute_metrics(normalised_random_features(5), np.arange(5), ['mAP@R'])
    assert np.isnan(metrics['mAP@R'])


@pytest.mark.parametrize('cutoff', [1, 3, 10, 1000])
def test_map_at_k_matches_definition(cutoff):
    features = normalised_random_features(45, seed=4)
    labels = clustered_labels(45, n_classes=4, seed=4, singletons=2)
    metrics = evaluation.compute_metrics(features, labels, [f'mAP@{cutoff}', 'mAP@R'],
                                         chunk_size=7)
    assert metrics[f'mAP@{cutoff}'] == pytest.approx(brute_force_map(features, labels, cutoff))


def test_features_are_compared_by_direction():
    features = normalised_random_features(30, seed=5)
    labels = clustered_labels(30, n_classes=4, seed=5)
    scales = np.random.default_rng(5).uniform(0.1, 10, (30, 1)).astype(np.float32)
    names = ['e_recall@1', 'e_recall@4', 'mAP@R']
    assert (evaluation.compute_metrics(features * scales, labels, names)
            == pytest.approx(evaluation.compute_metrics(features, labels, names)))


def test_nmi_and_f1_score_the_kmeans_assignment(monkeypatch):
    features = normalised_random_features(40, seed=6)
    labels = clustered_labels(40, n_classes=5, seed=6)
    assignment = np.random.default_rng(6).integers(0, 5, 40)
    requested = []

    def fake_kmeans(features, n_clusters, **settings):
        requested.append((n_clusters, settings))
        return assignment, None

    monkeypatch.setattr(evaluation.products, 'kmeans_clustering', fake_kmeans)
    metrics = evaluation.compute_metrics(features, labels, ['nmi', 'f1'], seed=11)
    assert requested == [(5, {'seed': 11, 'use_gpu': False})]
    assert metrics['nmi'] == pytest.approx(normalized_mutual_info_score(labels, assignment))
    assert metrics['f1'] == pytest.approx(clustering.pair_f1(labels, assignment))


def test_pair_f1_on_a_hand_made_clustering():
    labels = [0, 0, 0, 0, 1, 1]
    clusters = [5, 5, 5, 7, 7, 7]
    # 6 same-cluster pairs, 7 same-class pairs, 4 pairs both: P = 4/6, R = 4/7, F1 = 8/13.
    assert clustering.pair_f1(labels, clusters) == pytest.approx(8 / 13)
    assert clustering.pair_f1(labels, labels) == pytest.approx(1.0)
    assert clustering.pair_f1([0, 1, 2], [0, 1, 2]) == 0.0


def test_kmeans_recovers_well_separated_classes():
    centres = np.eye(4, 16, dtype=np.float32)
    labels = np.arange(40) % 4
    noise = 0.01 * np.random.default_rng(7).standard_normal((40, 16)).astype(np.float32)
    metrics = evaluation.compute_metrics(centres[labels] + noise, labels, ['nmi', 'f1'])
    assert metrics == {'nmi': pytest.approx(1.0), 'f1': pytest.approx(1.0)}


def test_results_follow_the_requested_order():
    features = normalised_random_features(20)
    labels = np.arange(20) % 4
    names = ['mAP@R', 'e_recall@2', 'f1', 'mAP@5', 'nmi', 'e_recall@1']
    assert list(evaluation.compute_metrics(features, labels, names)) == names


@pytest.mark.parametrize('name', ['recall@1', 'e_recall@0', 'e_recall@', 'e_recall@01',
                                  'mAP@r', 'NMI', 'mAP@-3'])
def test_unknown_metric_names_are_user_errors(name):
    with pytest.raises(UserError, match=name):
        evaluation.validate_metric_names(['e_recall@1', name])
    with pytest.raises(UserError):
        evaluation.compute_metrics(normalised_random_features(4), np.arange(4) % 2, [name])


def test_default_metrics_are_valid_and_follow_the_paper():
    assert datasets.default_metrics('cub200') == [
        'e_recall@1', 'e_recall@2', 'e_recall@4', 'e_recall@8', 'nmi', 'f1', 'mAP@R']
    assert datasets.default_metrics('cars196') == datasets.default_metrics('digits')
    assert datasets.default_metrics('online_products') == [
        'e_recall@1', 'e_recall@10', 'e_recall@100', 'e_recall@1000', 'nmi', 'mAP@R']
    for dataset in datasets.DATASETS:
        evaluation.validate_metric_names(datasets.default_metrics(dataset))
    evaluation.validate_metric_names(['mAP@1000', 'e_recall@1000', 'f1'])


def test_diverged_embeddings_are_reported():
    features = normalised_random_features(4)
    features[2, 0] = np.nan
    with pytest.raises(UserError, match='embeddings of 1 of 4 images contain nan or inf'):
        evaluation.compute_metrics(features, np.arange(4) % 2, ['e_recall@1'])


class TupleOutputNet(torch.nn.Module):
    """A linear embedding that, like some networks, returns (embeddings, extra)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, images):
        return self.linear(images.flatten(1)), images


def triplet_loader(images, labels, batch_size):
    indices = torch.arange(len(labels))
    return [(labels[i:i + batch_size], images[i:i + batch_size], indices[i:i + batch_size])
            for i in range(0, len(labels), batch_size)]


@pytest.mark.parametrize('train_mode', [True, False])
def test_extract_embeddings_gives_all_samples_and_restores_mode(train_mode):
    torch.manual_seed(0)
    model = TupleOutputNet().train(train_mode)
    images = torch.randint(0, 256, (10, 3, 1, 2), dtype=torch.uint8)
    labels = torch.arange(10) % 3
    features, extracted_labels = evaluation.extract_embeddings(
        model, triplet_loader(images, labels, batch_size=4), 'cpu')
    assert model.training is train_mode
    assert features.dtype == np.float32 and features.shape == (10, 3)
    assert extracted_labels.dtype == np.int64
    np.testing.assert_array_equal(extracted_labels, labels.numpy())
    with torch.no_grad():
        expected = model.linear(to_network_input(images, 'cpu').flatten(1))
        np.testing.assert_allclose(features, expected.numpy(), rtol=1e-6)


def test_extract_embeddings_runs_in_eval_mode():
    seen_modes = []

    class ModeRecorder(torch.nn.Module):
        def forward(self, images):
            seen_modes.append(self.training)
            return images.flatten(1)

    model = ModeRecorder().train()
    evaluation.extract_embeddings(model, triplet_loader(torch.zeros(3, 3, 1, 1, dtype=torch.uint8), torch.zeros(3), 2),
                                  torch.device('cpu'))
    assert seen_modes == [False, False] and model.training


class AutocastRecorder(torch.nn.Module):
    """Records, at every call, whether autocast is on for `device_type` and in which dtype."""

    def __init__(self, device_type):
        super().__init__()
        self.device_type = device_type
        self.seen = []

    def forward(self, images):
        enabled = torch.is_autocast_enabled(self.device_type)
        self.seen.append((enabled, torch.get_autocast_dtype(self.device_type) if enabled else None))
        return images.flatten(1)


class StaysOnTheCpu:
    """A uint8 batch of images whose .to(device) keeps them on the CPU: the CUDA code path without a GPU."""

    dtype = torch.uint8

    def __init__(self, images):
        self.images = images

    def to(self, device, non_blocking=False):
        return self.images


@pytest.mark.parametrize('amp, expected', [(False, (False, None)), (True, (True, torch.bfloat16))])
def test_cuda_evaluation_embeds_in_float32_unless_amp(monkeypatch, amp, expected):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *args, **kwargs: True)
    monkeypatch.setattr(transforms, '_normalisation', lambda *args: (torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)))
    model = AutocastRecorder('cuda')
    loader = [(torch.zeros(2), StaysOnTheCpu(torch.zeros(2, 3, 2, 2, dtype=torch.uint8)), torch.arange(2))
              for _ in range(2)]
    features, _ = evaluation.extract_embeddings(model, loader, 'cuda', amp=amp)
    assert model.seen == [expected, expected]
    assert features.dtype == np.float32


@pytest.mark.parametrize('amp', [False, True])
def test_cpu_evaluation_embeds_in_float32_unless_amp(amp):
    model = AutocastRecorder('cpu')
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    evaluation.extract_embeddings(model, triplet_loader(images, torch.zeros(4), 2), 'cpu', amp=amp)
    assert model.seen == [(amp, torch.bfloat16 if amp else None)] * 2


@pytest.mark.parametrize('amp', [False, True])
def test_training_evaluation_passes_amp_on(monkeypatch, amp):
    import argparse
    import main
    from evaluation.evaluator import Evaluator
    calls = []

    def recording_extract(model, loader, device, amp=False):
        calls.append(amp)
        return np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1])

    monkeypatch.setattr(evaluation.embeddings, 'extract_embeddings', recording_extract)
    opt = argparse.Namespace(amp=amp, evaluation_metrics=['e_recall@1'], evaluate_on_gpu=False, seed=0)
    evaluator = Evaluator({'testing': [0] * 4}, batch_size=2, workers=0, device=torch.device('cpu'))
    main.evaluate(torch.nn.Identity(), {'': evaluator, 'val_': evaluator}, opt)
    assert calls == [amp, amp]


class TinyImages(torch.utils.data.Dataset):
    """12 uint8 images of 3 classes, as the image datasets yield them: (label, image, index)."""

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return index % 3, torch.full((3, 8, 8), index * 20, dtype=torch.uint8), index


class FlatEmbedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, 4)

    def forward(self, images):
        return self.linear(images.flatten(1))


@pytest.mark.slow  # starts DataLoader worker processes
def test_no_evaluation_worker_outlives_its_evaluation_while_the_training_workers_stay():
    import multiprocessing

    from engine.training import training_loader
    from evaluation.evaluator import Evaluator

    assert multiprocessing.active_children() == []
    evaluator = Evaluator({'query': TinyImages(), 'gallery': TinyImages()}, batch_size=4, workers=2,
                          device=torch.device('cpu'))
    for _ in range(2):
        metrics, embedded, _ = evaluator.evaluate(FlatEmbedding(), ['e_recall@1'], seed=0)
        assert embedded['query'][0].shape == (12, 4) and 0 <= metrics['e_recall@1'] <= 1
        assert multiprocessing.active_children() == [], 'an evaluation loader kept its workers'
    train = training_loader(TinyImages(), [[0, 1, 2, 3]] * 2, 2, torch.device('cpu'))
    assert train.persistent_workers and not any(loader.persistent_workers for loader in evaluator.loaders.values())


def test_the_similarity_buffers_stay_within_their_memory_cap(monkeypatch):
    from evaluation import retrieval

    features, labels = normalised_random_features(100, seed=9), clustered_labels(100, n_classes=10, seed=9)
    names = ['e_recall@1', 'e_recall@50', 'mAP@R', 'mAP']
    uncapped = evaluation.compute_metrics(features, labels, names)
    monkeypatch.setattr(retrieval, 'SIMILARITY_BYTES', 2 * 7 * 100 * 4)  # two buffers of 7 rows of 100 float32
    rows, chunks = [], retrieval._Similarities.chunks
    monkeypatch.setattr(retrieval._Similarities, 'chunks', lambda self: (
        (rows.append(len(queries)), (queries, sims))[1] for queries, sims in chunks(self)))
    assert evaluation.compute_metrics(features, labels, names) == uncapped
    assert max(rows) == 7 and sum(rows) == 100
