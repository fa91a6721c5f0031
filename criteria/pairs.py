"""Which pairs of a batch share a class."""
import torch


def label_masks(labels):
    """(positives, negatives): B x B boolean masks; positives exclude the anchor itself."""
    same = labels[:, None] == labels[None, :]
    itself = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~itself, ~same
