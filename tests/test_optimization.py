"""Tests of engine/optimization.py: parameter groups as the authors' optimiser builds them (and AdamW)."""
import pytest
import torch
from torch import nn

from criteria.margin import MarginLoss
from engine.optimization import build_optimizer


class TinyEmbedder(nn.Module):
    """Backbone + model.last_linear, named as our networks name them."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.features = nn.Linear(4, 4)
        self.model.last_linear = nn.Linear(4, 2)


@pytest.mark.parametrize('optim', ['adam', 'adamw', 'sgd'])
@pytest.mark.parametrize('fc_lr', [-1, 0.01])
def test_network_groups_decay_and_the_margin_beta_does_not(optim, fc_lr):
    model, criterion = TinyEmbedder(), MarginLoss(3, beta=1.2, beta_lr=0.5)
    optimizer = build_optimizer(model, criterion, optim=optim, lr=0.001, fc_lr=fc_lr, decay=0.1)
    assert type(optimizer) is {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW, 'sgd': torch.optim.SGD}[optim]
    beta_group = next(group for group in optimizer.param_groups if group['params'][0] is criterion.beta)
    network_groups = [group for group in optimizer.param_groups if group is not beta_group]
    assert beta_group['weight_decay'] == 0.0 and beta_group['lr'] == 0.5
    assert all(group['weight_decay'] == 0.1 for group in network_groups)
    assert len(network_groups) == (2 if fc_lr >= 0 else 1)

    # A step with zero gradients moves decayed weights and leaves beta where it is.
    for parameter in list(model.parameters()) + [criterion.beta]:
        parameter.grad = torch.zeros_like(parameter)
    weight_before = model.model.features.weight.detach().clone()
    optimizer.step()
    assert torch.equal(criterion.beta.detach(), torch.full((3,), 1.2))
    assert not torch.equal(model.model.features.weight.detach(), weight_before)
