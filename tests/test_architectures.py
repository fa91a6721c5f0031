import argparse

import pytest
import torch
import torch.nn as nn

import architectures
from run_folder.checkpoint import load_weights
from plumbing.errors import UserError
from plumbing.runtime import deterministic_algorithms
from authors_checkpoint import authors_state_dict, expected_embeddings, fixed_input


def small(arch, embed_dim=16):
    return architectures.build(arch, embed_dim, pretrained=False)


@pytest.mark.parametrize('arch, expected', [
    ('resnet50_frozen_normalize', ('resnet50', {'frozen', 'normalize'})),
    ('resnet50_normalize_frozen', ('resnet50', {'frozen', 'normalize'})),
    ('resnet18_double_normalize', ('resnet18', {'double', 'normalize'})),
    ('resnet18_normalize_double_frozen', ('resnet18', {'double', 'frozen', 'normalize'})),
])
def test_arch_flags_in_any_order(arch, expected):
    assert architectures.parse_arch(arch) == expected


@pytest.mark.parametrize('arch', ['resnet51', 'resnet50_frozenn', 'vit_normalize'])
def test_unknown_arch_is_a_user_error(arch):
    with pytest.raises(UserError, match='unknown --arch'):
        architectures.parse_arch(arch)


def test_frozen_batchnorm_stays_frozen_after_train():
    model = small('resnet18_frozen_normalize')
    model.train()
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms and all(not bn.training for bn in batchnorms)
    before = [bn.running_mean.clone() for bn in batchnorms]
    model(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, batchnorms))
    assert model.model.conv1.training


def test_unfrozen_batchnorm_updates_statistics():
    model = small('resnet18_normalize').train()
    bn = model.model.bn1
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32))
    assert not torch.equal(before, bn.running_mean)


def test_normalize_gives_unit_norms_and_plain_does_not():
    x = torch.randn(3, 3, 32, 32)
    norms = small('resnet18_normalize').eval()(x).norm(dim=1)
    assert torch.allclose(norms, torch.ones(3), atol=1e-5)
    assert not torch.allclose(small('resnet18').eval()(x).norm(dim=1), torch.ones(3), atol=1e-3)


def test_double_pooling_sums_average_and_max():
    torch.manual_seed(0)
    model = small('resnet18_double').eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.feature_map(x)
        expected = model.model.last_linear(features.mean(dim=(2, 3)) + features.amax(dim=(2, 3)))
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_embed_dim_and_head_name():
    model = small('resnet34', embed_dim=24)
    assert model.model.last_linear.out_features == 24 and model.embed_dim == 24
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 24)


def test_bninception_converts_rgb_to_bgr_255():
    model = small('bninception_normalize', embed_dim=8).eval()
    seen = {}

    def features(x):
        seen['x'] = x
        return torch.ones(x.shape[0], 1024, 2, 2)
    model.model.features = features
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb01 = torch.rand(1, 3, 4, 4)
    model((rgb01 - mean) / std)
    expected = rgb01[:, [2, 1, 0]] * 255 - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)
    assert torch.allclose(seen['x'], expected, atol=1e-3)


def test_select_warns_for_frozen_without_weights(caplog):
    opt = argparse.Namespace(embed_dim=8, not_pretrained=True, pretrained_path=None, image_size=32)
    architectures.select('resnet18_frozen', opt)
    assert 'frozen BatchNorm' in caplog.text


def test_missing_imagenet_weights_name_three_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url',
                        lambda *a, **k: (_ for _ in ()).throw(OSError('network unreachable')))
    with pytest.raises(UserError) as error:
        architectures.build('resnet18', 8, pretrained=True)
    message = str(error.value)
    assert '--pretrained_path' in message and '--not_pretrained' in message and 'cache' in message


def test_pretrained_path_loads_an_offline_weights_file(tmp_path):
    import torchvision
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / 'resnet18.pth'
    torch.save(reference.state_dict(), path)
    model = architectures.build('resnet18', 8, pretrained=True, pretrained_path=str(path))
    assert torch.equal(model.model.conv1.weight, reference.conv1.weight)


@pytest.mark.parametrize('arch', ['resnet50_normalize_frozen', 'resnet50_normalize_frozen_double'])
def test_authors_checkpoint_gives_the_authors_embeddings(tmp_path, arch):
    path = tmp_path / 'net.pth'
    torch.save(authors_state_dict(), path)
    model = architectures.build(arch, 128, pretrained=False)
    load_weights(model, str(path))
    with torch.no_grad():
        embeddings = model.eval()(fixed_input())
    assert torch.allclose(embeddings, torch.tensor(expected_embeddings()[arch]), atol=1e-4)


def refuse_adaptive_max_pool(*args, **kwargs):
    raise AssertionError('adaptive_max_pool2d called under deterministic mode (no deterministic CUDA backward)')


def test_global_max_pool_under_deterministic_mode_is_amax_with_the_same_values_and_gradients(monkeypatch):
    from architectures import embedding_net

    torch.manual_seed(0)
    features = torch.randn(3, 8, 7, 7)  # float draws: every maximum is unique
    weights = torch.randn(3, 8, 1, 1)
    reference = features.clone().requires_grad_()
    expected = torch.nn.functional.adaptive_max_pool2d(reference, 1)
    expected.mul(weights).sum().backward()
    with monkeypatch.context() as patch, deterministic_algorithms():
        patch.setattr(embedding_net.F, 'adaptive_max_pool2d', refuse_adaptive_max_pool)
        candidate = features.clone().requires_grad_()
        pooled = embedding_net.global_max_pool(candidate)
        pooled.mul(weights).sum().backward()
    assert torch.equal(pooled, expected) and torch.equal(candidate.grad, reference.grad)
    assert type(pooled.grad_fn).__name__ == 'AmaxBackward0'
    by_default = embedding_net.global_max_pool(features.clone().requires_grad_())
    assert type(by_default.grad_fn).__name__ == 'AdaptiveMaxPool2DBackward0', 'the authors\' op by default'


def test_a_double_network_trains_alike_under_deterministic_mode_without_adaptive_max_pool(monkeypatch):
    """Embeddings and every parameter's gradient as with the authors' adaptive_max_pool2d (bit for bit: the ties of
    the ReLU map are zeros, whose gradient the ReLU drops either way), and adaptive_max_pool2d is never called."""
    from architectures import embedding_net

    torch.manual_seed(1)
    network = small('resnet18_double_normalize').train()  # BatchNorm trains: batch statistics in the backward too
    images = torch.randn(4, 3, 64, 64)  # a 2 x 2 map to pool

    def embeddings_and_gradients():
        network.zero_grad(set_to_none=True)
        embeddings = network(images)
        embeddings.pow(2).mul(torch.arange(16.0)).sum().backward()
        return embeddings.detach(), {name: p.grad.clone() for name, p in network.named_parameters()}

    expected, expected_gradients = embeddings_and_gradients()
    with monkeypatch.context() as patch, deterministic_algorithms():
        patch.setattr(embedding_net.F, 'adaptive_max_pool2d', refuse_adaptive_max_pool)
        got, gradients = embeddings_and_gradients()
    assert torch.equal(got, expected)
    for name, gradient in expected_gradients.items():
        assert torch.equal(gradients[name], gradient), name
