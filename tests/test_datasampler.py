"""Tests of datasampler/: batch composition, reproducibility, mid-epoch resume, replicas, errors."""
import argparse

import numpy as np
import pytest
import torch

import datasampler
import datasets
from datasampler.class_balanced import ClassBalancedBatchSampler
from plumbing.errors import UserError

# Ten classes: nine of five images and one (class 9) of a single image, 46 images in all.
LABELS = np.repeat(np.arange(10), [5] * 9 + [1])


def epoch_batches(sampler, epoch, start_batch=0):
    sampler.set_epoch(epoch, start_batch)
    return list(sampler)


def test_class_distinct_batches_hold_distinct_classes_of_samples_per_class_images():
    sampler = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, seed=0, draw='class_distinct')
    assert len(sampler) == 46 // 8
    seen_single_image_class = False
    for epoch in range(20):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == 5
        for batch in batches:
            assert len(batch) == 8
            assert all(type(index) is int and type(seed) is int for index, seed in batch)
            groups = [batch[i:i + 2] for i in range(0, 8, 2)]
            group_labels = [{int(LABELS[index]) for index, _ in group} for group in groups]
            assert all(len(labels) == 1 for labels in group_labels)
            assert len({labels.pop() for labels in group_labels}) == 4
            for group in groups:
                indices = [index for index, _ in group]
                if LABELS[indices[0]] == 9:
                    seen_single_image_class = True
                    assert indices == [45, 45]
                else:
                    assert len(set(indices)) == 2
    assert seen_single_image_class


def test_same_seed_and_epoch_repeat_other_epochs_and_seeds_differ():
    first = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, seed=3)
    second = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, seed=3)
    other_seed = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, seed=4)
    np.random.seed(0)
    torch.manual_seed(0)
    reference = epoch_batches(first, 2)
    np.random.seed(1)
    torch.manual_seed(1)
    assert epoch_batches(second, 2) == reference
    assert epoch_batches(first, 2) == reference
    assert epoch_batches(first, 3) != reference
    assert epoch_batches(other_seed, 2) != reference


def test_start_batch_yields_the_tail_of_the_full_epoch():
    sampler = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, seed=0)
    full = epoch_batches(sampler, 7)
    resumed = epoch_batches(sampler, 7, start_batch=3)
    assert resumed == full[3:]
    assert len(sampler) == 2 and sampler.batches_per_epoch == 5
    sampler.set_epoch(8)
    assert len(sampler) == 5
    with pytest.raises(ValueError):
        sampler.set_epoch(8, start_batch=6)


def test_replica_slices_partition_the_global_batch():
    labels = np.repeat(np.arange(12), 4)
    single = ClassBalancedBatchSampler(labels, batch_size=12, samples_per_class=3, seed=9)
    replicas = [ClassBalancedBatchSampler(labels, batch_size=12, samples_per_class=3, seed=9,
                                          num_replicas=2, rank=rank) for rank in range(2)]
    global_batches = epoch_batches(single, 1)
    slices = [epoch_batches(replica, 1) for replica in replicas]
    assert len(slices[0]) == len(slices[1]) == len(global_batches) == 4
    for batch, rank0, rank1 in zip(global_batches, *slices):
        assert len(rank0) == len(rank1) == 6
        assert rank0 + rank1 == batch


def test_class_distinct_reproduces_the_earlier_sampler():
    # Batch 2 of epoch 4, as the sampler before --data_sampler existed drew it (distinct classes and images).
    sampler = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=2, seed=0, draw='class_distinct')
    assert sampler.global_batch(4, 2) == [
        (38, 877566267622383888), (39, 2502084931514262771), (45, 1304125014439194449),
        (45, 8757161560323141478), (24, 3637312229567917307), (23, 7829187127357999158),
        (8, 3027210520709923168), (5, 2463381004677732952)]


def batch_statistics(n_classes, images_per_class, batch_size, spc, n_batches, draw):
    """Mean distinct classes per batch and the share of same-class pairs that are one image twice."""
    labels = np.repeat(np.arange(n_classes), images_per_class)
    sampler = ClassBalancedBatchSampler(labels, batch_size, spc, seed=0, draw=draw)
    distinct_classes, same_image, same_class = [], 0, 0
    for batch in range(n_batches):
        indices = np.array([index for index, _ in sampler.global_batch(0, batch)])
        distinct_classes.append(len(np.unique(labels[indices])))
        for draw_start in range(0, batch_size, spc):
            group = indices[draw_start:draw_start + spc]
            pairs = [(a, b) for i, a in enumerate(group) for b in group[i + 1:]]
            same_class += len(pairs)
            same_image += sum(a == b for a, b in pairs)
    return np.mean(distinct_classes), same_image / same_class


def test_class_random_draws_classes_with_replacement_as_the_authors():
    # CUB: 100 training classes, bs 112, spc 2: 56 draws, expected distinct classes 100 * (1 - 0.99^56).
    labels = np.repeat(np.arange(100), 30)
    sampler = ClassBalancedBatchSampler(labels, 112, 2, seed=0)
    assert sampler.draw == 'class_random'
    mean_distinct, _ = batch_statistics(100, 30, 112, 2, n_batches=400, draw='class_random')
    expected = 100 * (1 - (1 - 1 / 100) ** 56)
    assert abs(mean_distinct - expected) < 1.5
    assert abs(mean_distinct - 56) > 10  # class_distinct would give 56


def test_class_random_draws_images_with_replacement_as_the_authors():
    # SOP-like: 5 images a class, spc 2: one pair in five is the same image under two augmentations.
    _, same_image_share = batch_statistics(50, 5, 20, 2, n_batches=2000, draw='class_random')
    assert abs(same_image_share - 1 / 5) < 0.02
    _, distinct_share = batch_statistics(50, 5, 20, 2, n_batches=200, draw='class_distinct')
    assert distinct_share == 0


def test_class_random_allows_more_draws_than_classes():
    sampler = ClassBalancedBatchSampler(np.repeat(np.arange(3), 10), batch_size=16, samples_per_class=2, seed=1)
    sampler.set_epoch(0)
    batch = next(iter(sampler))
    assert len(batch) == 16 and len({index for index, _ in batch}) < 16


@pytest.mark.parametrize('draw', ['class_random', 'class_distinct'])
def test_both_draws_resume_and_slice_the_same(draw):
    labels = np.repeat(np.arange(12), 4)
    single = ClassBalancedBatchSampler(labels, batch_size=12, samples_per_class=3, seed=9, draw=draw)
    full = epoch_batches(single, 2)
    assert epoch_batches(single, 2, start_batch=2) == full[2:]
    ranks = [epoch_batches(ClassBalancedBatchSampler(labels, 12, 3, seed=9, num_replicas=2, rank=rank, draw=draw), 2)
             for rank in range(2)]
    assert [a + b for a, b in zip(*ranks)] == full
    for batch in full:  # every slice holds whole draws: labels constant within each group of 3
        groups = np.array([labels[index] for index, _ in batch]).reshape(-1, 3)
        assert (groups == groups[:, :1]).all()


@pytest.mark.parametrize('labels, batch_size, spc, replicas, message', [
    (LABELS, 9, 2, 1, 'not a multiple of --samples_per_class'),
    (LABELS, 8, 4, 4, 'divisible by 16'),
    (LABELS, 48, 8, 1, 'larger than the training split'),
    (LABELS, 8, 0, 1, 'must be positive'),
])
def test_impossible_settings_are_user_errors(labels, batch_size, spc, replicas, message):
    with pytest.raises(UserError, match=message):
        ClassBalancedBatchSampler(labels, batch_size, spc, seed=0, num_replicas=replicas)


def test_class_distinct_needs_enough_classes():
    with pytest.raises(UserError, match=r'56 classes per batch, but the training split has only 5 classes'):
        ClassBalancedBatchSampler(np.repeat(np.arange(5), 30), 112, 2, seed=0, draw='class_distinct')


def test_unknown_draw_is_a_user_error():
    with pytest.raises(UserError, match='unknown --data_sampler'):
        ClassBalancedBatchSampler(LABELS, 8, 2, seed=0, draw='random')


def test_negative_seed_is_a_user_error():
    with pytest.raises(UserError, match='--seed -1 must be non-negative'):
        ClassBalancedBatchSampler(LABELS, 8, 2, seed=-1)


@pytest.mark.parametrize('draw', ['class_random', 'class_distinct'])
def test_select_reads_the_flags(draw):
    opt = argparse.Namespace(bs=8, samples_per_class=4, seed=11, data_sampler=draw)
    sampler = datasampler.select(opt, LABELS)
    reference = ClassBalancedBatchSampler(LABELS, batch_size=8, samples_per_class=4, seed=11, draw=draw)
    assert (sampler.num_replicas, sampler.rank, sampler.draw) == (1, 0, draw)
    assert epoch_batches(sampler, 0) == epoch_batches(reference, 0)


def loader_batches(dataset, sampler, num_workers):
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)
    return [(labels, images, indices) for labels, images, indices in loader]


def test_augmented_batches_repeat_across_workers_and_resume(make_cub200):
    opt = argparse.Namespace(dataset='cub200', source_path=str(make_cub200(n_classes=8, per_class=3)),
                             use_tv_split=False, tv_split_perc=0.8, tv_split_by_samples=False, cv_folds=None,
                             no_test_metrics=False, augmentation='base', image_size=16, seed=0, full_decode=False,
                             pil_resampling=False)
    training = datasets.select(opt)['training']
    sampler = ClassBalancedBatchSampler(training.labels, batch_size=4, samples_per_class=2, seed=0)

    sampler.set_epoch(1)
    in_process = loader_batches(training, sampler, num_workers=0)
    with_workers = loader_batches(training, sampler, num_workers=2)
    sampler.set_epoch(1, start_batch=1)
    resumed = loader_batches(training, sampler, num_workers=0)

    assert len(in_process) == 3 and len(resumed) == 2
    for (labels, images, indices), (labels_w, images_w, indices_w) in zip(in_process, with_workers):
        assert torch.equal(labels, labels_w) and torch.equal(indices, indices_w)
        assert torch.equal(images, images_w)
        assert torch.equal(labels[0::2], labels[1::2])
        assert torch.equal(labels, torch.as_tensor(training.labels[indices.numpy()]))
    for (_, images, _), (_, images_r, _) in zip(in_process[1:], resumed):
        assert torch.equal(images, images_r)
