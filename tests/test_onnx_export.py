"""Export_ONNX.py: the embedding network as ONNX with its normalisation inside, a dynamic batch size, and the
parity check against PyTorch on real images (a ResNet, and a timm ViT with its own mean and std)."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import architectures
from run_folder.checkpoint import save_checkpoint
from runs import one_line_error, run_entry_point
from search import onnx_export
from search.embedding import Embedder, sha256_of

onnx = pytest.importorskip('onnx', reason='the ONNX export needs onnx (pip install -r requirements-onnx.txt)')
onnxruntime = pytest.importorskip('onnxruntime', reason='the ONNX parity check needs onnxruntime '
                                                        '(pip install -r requirements-onnx.txt)')
VIT = 'vit_tiny_patch16_224_normalize'


def write_checkpoint(path, arch, embed_dim=16, image_size=32, config=True):
    torch.manual_seed(0)
    model = architectures.build(arch, embed_dim, pretrained=False, image_size=image_size)
    if config:
        save_checkpoint(str(path), model, {'arch': arch, 'embed_dim': embed_dim, 'image_size': image_size}, 0, {})
    else:  # as the authors' net.pth: a bare state dict
        torch.save(model.state_dict(), path)
    return path


def write_photos(folder, count=10, seed=0):
    """Photo-like images of several sizes (the pipeline resizes and crops them)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(count):
        height, width = 40 + 7 * k, 90 - 4 * k
        y, x = np.mgrid[0:height, 0:width]
        base = 128 + 100 * np.sin(x[..., None] / (3 + k) + y[..., None] / 5 + np.arange(3))
        pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f'photo_{k}.{"png" if k % 2 else "jpg"}')
    return folder


def parity_of(printed):
    found = re.search(r'cosine min ([0-9.]+) \(1 - min = [-+.e0-9]+\), mean ([0-9.]+), single image ([0-9.]+)',
                      printed)
    assert found, printed
    return [float(value) for value in found.groups()]


def export(capsys, *args):
    capsys.readouterr()
    code = run_entry_point('Export_ONNX', *args)
    return code, capsys.readouterr()


def assert_runs_like_pytorch(path, checkpoint, images, input_kind='uint8'):
    """onnxruntime on batches of 1 and 3 of the evaluation pipeline's crops gives PyTorch's embeddings."""
    embedder = Embedder.from_checkpoint(str(checkpoint), {}, {'augmentation': 'base', 'full_decode': False,
                                                              'pil_resampling': False}, 'cpu')
    inference = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    batch = next(iter(embedder.loader([str(p) for p in sorted(images.iterdir())], 4, 0)))[1]
    for size in (1, 3):
        pixels = batch[:size].numpy()
        fed = pixels if input_kind == 'uint8' else pixels.astype(np.float32) / 255
        got = inference.run(None, {'images': fed})[0]
        expected = embedder.embed_images(batch[:size])
        assert got.shape == (size, 16)
        assert onnx_export.cosines(got, expected).min() >= 0.9999
    return inference


@pytest.mark.slow
def test_a_resnet_exports_with_parity_and_a_dynamic_batch(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / 'resnet.pth', 'resnet18_normalize')
    images = write_photos(tmp_path / 'images')
    target = tmp_path / 'resnet.onnx'
    code, output = export(capsys, '--checkpoint', checkpoint, '--onnx', target, '--images', images, '--bs', 4)
    assert code == 0, output.err
    minimum, mean, single = parity_of(output.out)
    assert minimum >= 0.9999 and mean >= minimum and single >= 0.9999
    assert 'ONNX parity on 10 images' in output.out and 'batch sizes 1, 2, 4' in output.out
    inference = assert_runs_like_pytorch(target, checkpoint, images)
    (shape,) = [tuple(i.shape) for i in inference.get_inputs()]
    assert shape[1:] == (3, 32, 32) and isinstance(shape[0], str), 'the batch size is dynamic'
    assert inference.get_inputs()[0].type == 'tensor(uint8)'
    properties = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert properties['checkpoint_sha256'] == sha256_of(str(checkpoint)) and properties['input'] == 'uint8'
    assert properties['input_mean'] == '0.485,0.456,0.406' and properties['resize'] == '37'


@pytest.mark.slow
def test_a_timm_vit_exports_with_its_own_normalisation_inside(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / 'vit.pth', VIT)
    images = write_photos(tmp_path / 'images', count=6)
    target = tmp_path / 'vit.onnx'
    code, output = export(capsys, '--checkpoint', checkpoint, '--onnx', target, '--images', images)
    assert code == 0, output.err
    assert min(parity_of(output.out)) >= 0.9999
    assert_runs_like_pytorch(target, checkpoint, images)
    properties = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert properties['input_mean'] == '0.5,0.5,0.5', 'timm\'s augreg mean, not ImageNet\'s'


@pytest.mark.slow
def test_float_input_and_an_authors_style_checkpoint_with_flags(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / 'net.pth', 'resnet18_normalize', config=False)
    images = write_photos(tmp_path / 'images', count=4)
    target = tmp_path / 'float.onnx'
    code, output = export(capsys, '--checkpoint', checkpoint, '--onnx', target, '--images', images, '--input', 'float',
                          '--arch', 'resnet18_normalize', '--embed_dim', 16, '--image_size', 32)
    assert code == 0, output.err
    assert min(parity_of(output.out)) >= 0.9999
    inference = onnxruntime.InferenceSession(str(target), providers=['CPUExecutionProvider'])
    assert inference.get_inputs()[0].type == 'tensor(float)'


@pytest.mark.slow
def test_dynamo_exporter(tmp_path, capsys):
    pytest.importorskip('onnxscript', reason='--exporter dynamo needs onnxscript (pip install onnxscript)')
    checkpoint = write_checkpoint(tmp_path / 'resnet.pth', 'resnet18_normalize')
    images = write_photos(tmp_path / 'images', count=4)
    code, output = export(capsys, '--checkpoint', checkpoint, '--onnx', tmp_path / 'dynamo.onnx', '--images', images,
                          '--exporter', 'dynamo')
    assert code == 0, output.err
    assert min(parity_of(output.out)) >= 0.9999
    assert_runs_like_pytorch(tmp_path / 'dynamo.onnx', checkpoint, images)


@pytest.mark.slow
def test_a_failed_parity_check_writes_no_file(tmp_path, capsys, monkeypatch):
    checkpoint = write_checkpoint(tmp_path / 'resnet.pth', 'resnet18_normalize')
    images = write_photos(tmp_path / 'images', count=3)
    embeddings = onnx_export.onnx_embeddings
    monkeypatch.setattr(onnx_export, 'onnx_embeddings',
                        lambda *args: embeddings(*args) + np.linspace(0, 1, 16, dtype=np.float32))
    code, output = export(capsys, '--checkpoint', checkpoint, '--onnx', tmp_path / 'bad.onnx', '--images', images)
    assert code == 1 and '-> FAIL' in output.out and 'was not written' in output.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['images', 'resnet.pth'], 'no file, no temporary'


@pytest.mark.parametrize('opset, reason', [(5, 'not implemented for opset 5'),
                                           (99, 'Unsupported onnx_opset_version: 99')])
def test_an_exporter_failure_is_one_line_and_writes_nothing(tmp_path, capfd, opset, reason):
    checkpoint = write_checkpoint(tmp_path / 'resnet.pth', 'resnet18_normalize')
    images = write_photos(tmp_path / 'images', count=2)
    capfd.readouterr()
    code = run_entry_point('Export_ONNX', '--checkpoint', checkpoint, '--onnx', tmp_path / 'model.onnx', '--images',
                           images, '--opset', opset)
    output = capfd.readouterr()
    assert 'graph' not in output.out, 'torch\'s dump of the graph (C++, on file descriptor 1) is held back'
    error = output.err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and error.startswith('error: '), error
    assert f"torch.onnx's torchscript exporter cannot export this network at --opset {opset} (" in error
    assert reason in error and error.endswith('use the default --opset 17, or --exporter dynamo')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['images', 'resnet.pth'], 'no file, no temporary'


def test_a_missing_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(onnx_export, 'missing_packages', lambda exporter='torchscript': ['onnxruntime'])
    code = run_entry_point('Export_ONNX', '--checkpoint', tmp_path / 'x.pth', '--onnx', tmp_path / 'x.onnx',
                           '--images', tmp_path)
    assert 'pip install onnxruntime' in one_line_error(capsys, code)
