"""A seeded torch generator kept in a module's state_dict: randomness that resumes exactly and agrees across
processes (batch miners, a loss's own draws)."""
import torch
from torch import nn


class RandomSource(nn.Module):
    """Owns a torch generator seeded with `seed`, made on first use on the device it is asked for.

    The generator's state is the module's extra state, so it travels in the state_dict of whatever holds the module:
    every process of a torchrun run draws the same values from the same seed, and a resumed run draws what the
    uninterrupted one would have.
    """

    def __init__(self, seed=0):
        super().__init__()
        self.seed = seed
        self._generator = None
        self._saved_state = None

    def generator(self, device):
        """The generator on `device` (made on first use there, from the seed or a restored state)."""
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
