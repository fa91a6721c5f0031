"""One evaluation, as main.py, Test_pretrained_models.py and Input_Baseline.py run it: the loaders of the splits a
dataset's protocol evaluates, a network's embeddings of them, and their metrics."""
from typing import NamedTuple

import torch

from evaluation import embeddings, metrics_of_test_embeddings
from evaluation.collapse import collapse_warning
from plumbing import distributed
from plumbing.stop_signals import ignore_stop_signals


def evaluation_loader(dataset, batch_size, workers, device):
    """`dataset` in order, `batch_size` at a time; under torchrun this rank's shard of it.

    Its `workers` processes live for one pass only: kept between evaluations (persistent_workers), the workers of
    each evaluated split (test, or query and gallery, and validation) would hold their memory through every epoch's
    training, beside the training loader's, which are kept (engine.training.training_loader).
    """
    shard = distributed.ShardSampler(len(dataset), distributed.world_size(), distributed.rank())
    # A private generator keeps the global torch RNG untouched by loader iteration (bit-exact resume).
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=workers,
                                       pin_memory=device.type == 'cuda', persistent_workers=False,
                                       worker_init_fn=ignore_stop_signals, generator=torch.Generator())


class Evaluation(NamedTuple):
    """What one evaluation gives: the metrics, the embeddings {part: (features, labels)}, and the warning that
    they have collapsed (None where they have not)."""
    metrics: dict
    embedded: dict
    collapse: str


class Evaluator:
    """The evaluated splits of one protocol, {'testing': ImageDataset} (leave-one-out) or {'query': ...,
    'gallery': ...} (query/gallery), with their loaders on `device`."""

    def __init__(self, parts, *, batch_size, workers, device):
        self.parts = dict(parts)
        self.device = device
        self.loaders = {part: evaluation_loader(dataset, batch_size, workers, device)
                        for part, dataset in self.parts.items()}

    def embed(self, model, amp=False):
        """{part: (features, labels)} of every split, in dataset order; under torchrun each rank embeds its shard
        and every rank gets them all."""
        embedded = {}
        for part, loader in self.loaders.items():
            features, labels = embeddings.extract_embeddings(model, loader, self.device, amp=amp)
            length = len(loader.dataset)
            embedded[part] = (distributed.gather_shards(features, length), distributed.gather_shards(labels, length))
        return embedded

    def evaluate(self, model, metric_names, *, amp=False, use_gpu=False, seed=0, what='test'):
        """The Evaluation of `model`, its metrics and collapse check computed by rank 0 alone and given to every
        rank; `what` names the splits in the collapse warning."""
        embedded = self.embed(model, amp=amp)
        metrics, collapse = distributed.on_main(self.score, embedded, metric_names, use_gpu=use_gpu, seed=seed,
                                                what=what)
        return Evaluation(metrics, embedded, collapse)

    @staticmethod
    def score(embedded, metric_names, *, use_gpu, seed, what):
        return (metrics_of_test_embeddings(embedded, metric_names, use_gpu=use_gpu, seed=seed),
                collapse_warning(embedded, what))
