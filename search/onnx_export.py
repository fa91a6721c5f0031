"""ONNX export of a checkpoint's embedding network, with the normalisation inside the graph, and its parity check.

The exported graph takes `images`, a batch (any size) of B x 3 x S x S RGB images, S the checkpoint's image size,
as the evaluation pipeline crops them (shorter side resized to round(S * 256 / 224), centre crop S; `big`: crop of
that size), either
- uint8 (0..255), the pipeline's own output, or
- float32 in 0..1 (torchvision's ToTensor),
and gives `embeddings`, B x embed_dim float32, L2-normalised where the arch has `_normalize`. The mean/std
normalisation of the network (ImageNet's, or a timm model's own) is the graph's first step.

The export is torch.onnx.export: its TorchScript exporter (needs `onnx`) or, with exporter='dynamo', torch's
torch.export-based one (needs `onnxscript` too). The parity check runs onnxruntime on real images and compares
its embeddings with PyTorch's (cosine similarity per image), at two batch sizes.
"""
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
import torch

from datasets.transforms import normalisation_of, to_network_input
from plumbing.errors import UserError
from plumbing.files import atomic_write_with
from plumbing.lazy import lazy_module

# Optional (requirements-onnx.txt): imported by an export, after missing_packages has named what is not installed.
onnx = lazy_module('onnx')
onnxruntime = lazy_module('onnxruntime')

logger = logging.getLogger(__name__)

INPUT_KINDS = ('uint8', 'float')
EXPORTERS = ('torchscript', 'dynamo')
DEFAULT_OPSET = 17
PARITY_COSINE = 0.9999
"""The lowest cosine similarity between onnxruntime's and PyTorch's embedding of an image that passes."""


def missing_packages(exporter='torchscript'):
    """The pip names of what the export needs and lacks."""
    needed = {'onnx': 'onnx', 'onnxruntime': 'onnxruntime'}
    if exporter == 'dynamo':
        needed['onnxscript'] = 'onnxscript'
    missing = []
    for module, package in needed.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


class NormalisedEmbedding(torch.nn.Module):
    """`network` behind its input normalisation: uint8 (0..255) or float (0..1) images in, embeddings out. The
    arithmetic is datasets.transforms.to_network_input's (x - 255 mean) * 1 / (255 std)."""

    def __init__(self, network, input_kind='uint8'):
        super().__init__()
        if input_kind not in INPUT_KINDS:
            raise UserError(f'--input {input_kind!r}: choose one of {", ".join(INPUT_KINDS)}')
        mean, std = normalisation_of(network)
        self.network = network
        self.input_kind = input_kind
        self.register_buffer('shift', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer('scale', 1 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255))

    def forward(self, images):
        pixels = images.to(torch.float32)
        if self.input_kind == 'float':
            pixels = pixels * 255
        output = self.network((pixels - self.shift) * self.scale)
        return output[0] if isinstance(output, (tuple, list)) else output


def example_input(input_kind, image_size, batch=2):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    return images if input_kind == 'uint8' else images.float() / 255


def export(network, path, *, input_kind='uint8', image_size, opset=DEFAULT_OPSET, exporter='torchscript',
           metadata=None):
    """Write `network` (an EmbeddingNet, on the CPU) as ONNX to `path`, batch size dynamic; `metadata` {key: str}
    goes into the model's metadata_props."""
    missing = missing_packages(exporter)
    if missing:
        raise UserError(f'the ONNX export needs {" and ".join(missing)}: pip install -r requirements-onnx.txt'
                        + (' onnxscript' if 'onnxscript' in missing else ''))
    wrapped = NormalisedEmbedding(network, input_kind).eval()
    example = (example_input(input_kind, image_size),)
    if exporter not in EXPORTERS:
        raise UserError(f'--exporter {exporter!r}: choose one of {", ".join(EXPORTERS)}')
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad(), native_output_held() as held:
            # The TorchScript exporter warns that it is the legacy one, and about Python numbers traced as constants
            # (timm's shape checks, constant for one image size): neither concerns this graph. The others are shown
            # after an export that worked (a failed one says why in one line).
            warnings.simplefilter('default')
            warnings.simplefilter('ignore', category=DeprecationWarning)
            warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
            if exporter == 'dynamo':
                torch.onnx.export(wrapped, example, path, dynamo=True, input_names=['images'],
                                  output_names=['embeddings'], opset_version=opset,
                                  dynamic_shapes=({0: torch.export.Dim('batch')},), external_data=False)
            else:
                torch.onnx.export(wrapped, example, path, dynamo=False, input_names=['images'],
                                  output_names=['embeddings'], opset_version=opset,
                                  dynamic_axes={'images': {0: 'batch'}, 'embeddings': {0: 'batch'}})
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as error:  # the exporters raise many types (OnnxExporterError, RuntimeError, ...), all a refusal
        other = ', or --exporter dynamo' if exporter == 'torchscript' else ''
        raise UserError(f'torch.onnx\'s {exporter} exporter cannot export this network at --opset {opset} '
                        f'({first_line(error)}); use the default --opset {DEFAULT_OPSET}{other}') from None
    sys.stdout.write(''.join(held))
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, path)
    return path


@contextlib.contextmanager
def native_output_held():
    """What this process writes to its standard output (file descriptor 1, C++ code included) while in the block,
    held back: the block gets a list that holds it (as text) afterwards. torch's TorchScript exporter prints its whole
    graph there when it fails."""
    sys.stdout.flush()
    saved, output = os.dup(1), []
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        try:
            yield output
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            held.seek(0)
            output.append(held.read().decode(errors='replace'))


def first_line(error):
    """The first line of an exporter's message (they run to many lines), or the exception's name."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def session(path):
    """An onnxruntime InferenceSession of the file on the CPU."""
    return onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])


def onnx_embeddings(inference, images, input_kind='uint8'):
    """onnxruntime's embeddings (numpy float32) of a uint8 batch (B x 3 x S x S, torch or numpy)."""
    pixels = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if input_kind == 'float':
        pixels = pixels.astype(np.float32) / 255
    return inference.run(['embeddings'], {'images': np.ascontiguousarray(pixels)})[0]


def cosines(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def parity(path, network, batches, input_kind='uint8'):
    """onnxruntime vs PyTorch (float32, CPU; the network on to_network_input's batches, as the evaluation embeds)
    on the uint8 batches `batches` (a list, from the evaluation pipeline):
    {'images', 'min_cosine', 'mean_cosine', 'max_abs_difference', 'batch_sizes', 'single_image_cosine'}. The
    single-image figure runs the first image alone, so a batch size other than the exported example's is
    exercised."""
    inference = session(path)
    reference, exported = [], []
    network = network.eval()
    normalisation = normalisation_of(network)
    with torch.inference_mode():
        for images in batches:
            output = network(to_network_input(images, 'cpu', False, *normalisation))  # as the evaluation embeds
            reference.append((output[0] if isinstance(output, (tuple, list)) else output).float().numpy())
            exported.append(onnx_embeddings(inference, images, input_kind))
    if not reference:
        raise UserError('no readable image for the parity check')
    reference, exported = np.concatenate(reference), np.concatenate(exported)
    first = next(iter(batches))[:1]
    single = onnx_embeddings(inference, first, input_kind)
    similarity = cosines(reference, exported)
    return {'images': int(len(reference)), 'min_cosine': float(similarity.min()),
            'mean_cosine': float(similarity.mean()), 'max_abs_difference': float(np.abs(reference - exported).max()),
            'batch_sizes': sorted({len(images) for images in batches} | {1}),
            'single_image_cosine': float(cosines(reference[:1], single)[0])}


@contextlib.contextmanager
def temporary_beside(path):
    """A temporary file name in the folder of `path` (named as plumbing.files names its temporaries), removed
    afterwards."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(handle)
    try:
        yield temporary
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def publish(temporary, path):
    """Put the checked file `temporary` at `path` atomically (a crash leaves the old file or the new one)."""
    atomic_write_with(path, lambda target: shutil.copyfile(temporary, target))
