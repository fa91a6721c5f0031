"""Evaluated embeddings as a .npz file, so that any reported number can be checked outside the repository."""
import io

import numpy as np

from plumbing.files import atomic_write_bytes


def write_embeddings(path, embedded, test_parts):
    """Write {part}_features, {part}_labels and {part}_paths of every evaluated part ('test', or 'query' and
    'gallery') of `embedded` {part: (features, labels)} to the .npz file `path`, atomically (nothing is left
    half-written); `test_parts` {part: dataset} gives the image paths."""
    arrays = {}
    for part, (features, labels) in embedded.items():
        name = 'test' if part == 'testing' else part
        arrays.update({f'{name}_features': features, f'{name}_labels': labels,
                       f'{name}_paths': np.array(test_parts[part].paths, dtype=str)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
