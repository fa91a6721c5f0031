"""What every batch miner shares: the call, and the random generator a randomised miner draws from."""
from criteria.random_source import RandomSource


class Miner(RandomSource):
    """A batch miner: `miner(embeddings, labels)` -> a tuple of index tensors into the batch (e.g. anchors,
    positives, negatives), computed without gradient.

    A randomised miner draws from `self.generator(device)`, seeded with the run's seed and kept in the criterion's
    state_dict (criteria.random_source.RandomSource): every process of a torchrun run mines the same tuples from the
    same gathered batch, and a resumed run mines what the uninterrupted one would have.
    """
