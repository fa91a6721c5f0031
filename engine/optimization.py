"""Optimizer (adam, adamw or sgd, optional own lr for last_linear, loss parameters) and the MultiStepLR schedule."""
import torch


def build_optimizer(model, criterion, optim, lr, fc_lr, decay, fused=False):
    """Parameter groups: the backbone at lr; last_linear at fc_lr when fc_lr >= 0; the loss's own parameters.

    adam adds decay * weight to the gradient (L2, as the authors); adamw decays the weights apart from the adaptive
    step (Loshchilov & Hutter), as transformer fine-tuning usually does.
    fused: Adam / AdamW run as torch's fused kernel, which can skip a non-finite step on the device (SGD ignores it).
    """
    head = [p for name, p in model.named_parameters() if name.startswith('model.last_linear.') and p.requires_grad]
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    if fc_lr >= 0:
        groups = [{'params': backbone, 'lr': lr}, {'params': head, 'lr': fc_lr}]
    else:
        groups = [{'params': backbone + head, 'lr': lr}]
    groups += criterion.param_groups(lr) if hasattr(criterion, 'param_groups') else []
    if optim == 'adam':
        return torch.optim.Adam(groups, lr=lr, weight_decay=decay, fused=fused)
    if optim == 'adamw':
        return torch.optim.AdamW(groups, lr=lr, weight_decay=decay, fused=fused)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=decay)


def build_scheduler(optimizer, milestones, gamma):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
