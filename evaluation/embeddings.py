"""Embedding extraction: run a network over a loader and collect its embeddings and labels."""
import numpy as np
import torch
from tqdm import tqdm

from datasets.transforms import normalisation_of, to_network_input
from plumbing import distributed

AMP_NOTE = ('--amp: test images are embedded in bfloat16; metrics may differ from a float32 evaluation '
            'in the third decimal')


def embedding_autocast(device_type, amp):
    """bfloat16 autocast on `device_type` with `amp`, else a disabled one: float32 embeddings, as the authors."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp)


def extract_embeddings(model, loader, device, amp=False):
    """Embeddings (N x D float32) and labels (N int64) of every sample `loader` yields.

    `loader` yields (labels, uint8 images, indices) batches, as datasets.transforms makes them;
    `model(images)` returns the embeddings or a tuple whose first element is them. The model runs in
    eval mode without autograd, in float32 unless `amp` (bfloat16 autocast), and gets its train/eval mode
    back afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    features, labels = [], []
    normalisation = normalisation_of(model)
    try:
        with torch.inference_mode(), embedding_autocast(device.type, amp):
            bars = None if distributed.is_main() else True  # None: shown on a terminal; under torchrun rank 0 only
            for batch_labels, images, _ in tqdm(loader, desc='Embedding', leave=False, disable=bars):
                output = model(to_network_input(images, device, False, *normalisation))
                embeddings = output[0] if isinstance(output, (tuple, list)) else output
                features.append(embeddings.float().cpu())
                labels.append(torch.as_tensor(batch_labels).reshape(-1))
    finally:
        model.train(was_training)
    return (torch.cat(features).numpy().astype(np.float32, copy=False),
            torch.cat(labels).numpy().astype(np.int64, copy=False))
