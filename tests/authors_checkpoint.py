"""A synthetic checkpoint in the layout of the authors' released net.pth files, and what their network makes of it.

fixtures/authors_resnet50_state_dict_keys.tsv lists every key, shape and dtype of the authors' checkpoints (their
Network registered model.layer1..4 a second time as `layer_blocks`, so those tensors appear twice).
fixtures/authors_resnet50_embeddings.json holds the embeddings that the authors' own network (eval mode) computed
from `authors_state_dict()` for `fixed_input()`, per arch, at embed_dim 128: a network that loads the state dict and
reproduces them computes what theirs computes.
"""
import json
import math
import os

import torch

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
KEYS_FILE = os.path.join(FIXTURES, 'authors_resnet50_state_dict_keys.tsv')
EMBEDDINGS_FILE = os.path.join(FIXTURES, 'authors_resnet50_embeddings.json')
ALIAS_PREFIX = 'layer_blocks.'


def state_dict_layout(keys_file=KEYS_FILE):
    """[(key, shape)] in the checkpoint's order (the dtype column follows from the key)."""
    layout = []
    with open(keys_file) as stream:
        for line in stream:
            if not line.strip() or line.startswith('#'):
                continue
            key, shape, _ = line.rstrip('\n').split('\t')
            layout.append((key, tuple(int(size) for size in shape.strip('()').split(',') if size.strip())))
    return layout


def synthetic_tensor(key, shape, generator):
    """Well-scaled values for one tensor: BatchNorm statistics and affine terms near their usual values,
    biases small, convolution and linear weights He-normal."""
    if key.endswith('num_batches_tracked'):
        return torch.tensor(0, dtype=torch.int64)
    if key.endswith('running_var'):
        return 1.0 + 0.1 * torch.rand(shape, generator=generator)
    if key.endswith(('running_mean', '.bias')):
        return 0.1 * torch.randn(shape, generator=generator)
    is_batchnorm_scale = '.bn' in key or 'downsample.1' in key
    if is_batchnorm_scale:
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)


def authors_state_dict(keys_file=KEYS_FILE):
    """Deterministic weights for every key, drawn in the checkpoint's key order from one seeded generator;
    each layer_blocks.<i>.* key holds the very tensor of model.layer<i+1>.*, as in the authors' files."""
    generator = torch.Generator().manual_seed(0)
    layout = state_dict_layout(keys_file)
    state = {key: synthetic_tensor(key, shape, generator) for key, shape in layout if not key.startswith(ALIAS_PREFIX)}
    for key, _ in layout:
        if key.startswith(ALIAS_PREFIX):
            index, rest = key[len(ALIAS_PREFIX):].split('.', 1)
            state[key] = state[f'model.layer{int(index) + 1}.{rest}']
    return state


def fixed_input():
    """The two 224x224 RGB inputs the expected embeddings were computed for."""
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def expected_embeddings():
    """arch -> the authors' network's two embeddings (lists of 128 floats)."""
    with open(EMBEDDINGS_FILE) as stream:
        return json.load(stream)
