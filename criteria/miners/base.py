"""What every batch miner shares: the call, and the random generator a randomised miner draws from."""
import torch
from torch import nn


class Miner(nn.Module):
    """A batch miner: `miner(embeddings, labels)` -> a tuple of index tensors into the batch (e.g. anchors,
    positives, negatives), computed without gradient.

    A randomised miner draws from its own generator, seeded with the run's seed: every process of a torchrun run
    mines the same tuples from the same gathered batch, and the generator's state is the miner's extra state, so it
    travels in the criterion's state_dict and a resumed run mines what the uninterrupted one would have.
    """

    def __init__(self, seed=0):
        super().__init__()
        self.seed = seed
        self._generator = None
        self._saved_state = None

    def generator(self, device):
        """The miner's generator on `device` (made on first use there, from the seed or a restored state)."""
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            saved = self._saved_state
            if saved is not None and saved['device'] == torch.device(device).type:
                self._generator.set_state(saved['state'])
            self._saved_state = None
        return self._generator

    def get_extra_state(self):
        if self._generator is not None:
            return {'device': self._generator.device.type, 'state': self._generator.get_state()}
        return self._saved_state

    def set_extra_state(self, state):
        self._generator = None
        self._saved_state = state
