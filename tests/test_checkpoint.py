import argparse
import errno
import os

import pytest
import torch

import architectures
from run_folder.checkpoint import load_weights, plain_config, save_checkpoint
from plumbing.errors import UserError
from plumbing.files import FileWriteError, atomic_write_bytes


def net(arch='resnet18_normalize', embed_dim=8):
    return architectures.build(arch, embed_dim, pretrained=False).eval()


def test_round_trip_gives_same_embeddings_and_plain_config(tmp_path):
    model = net()
    opt = argparse.Namespace(arch='resnet18_normalize', embed_dim=8, tau=[3, 5], applied_defaults={'bs': 4})
    path = tmp_path / 'best.pth'
    save_checkpoint(str(path), model, plain_config(opt), epoch=3, metrics={'e_recall@1': 0.5})
    loaded = torch.load(path, weights_only=True)
    assert loaded['config'] == {'applied_defaults': {'bs': 4}, 'arch': 'resnet18_normalize', 'embed_dim': 8,
                                'tau': [3, 5]}
    assert loaded['epoch'] == 3 and loaded['metrics'] == {'e_recall@1': 0.5}
    other = net()
    meta = load_weights(other, str(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
    assert meta['epoch'] == 3


def test_plain_config_drops_secrets():
    opt = argparse.Namespace(wandb_key='secret', project='p')
    assert plain_config(opt) == {'project': 'p'}


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / 'last.pth'
    save_checkpoint(str(path), net(), {}, 0, {})
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 1, 100):
        path.write_bytes(data[:size])
        with pytest.raises(UserError, match=f'last.pth is cut short \\({size:,} bytes, its end is missing\\): a save, '
                                            f'copy or download of it was interrupted; copy it again'):
            load_weights(net(), str(path))


def test_a_legacy_checkpoint_cut_short_is_not_taken_for_pickled_code(tmp_path):
    path = tmp_path / 'net.pth'
    torch.save(net().state_dict(), path, _use_new_zipfile_serialization=False)  # as older torch wrote net.pth
    data = path.read_bytes()
    cut = data.index(b'_rebuild_tensor') + 4  # inside the name of the function that rebuilds a tensor
    for size in (cut, len(data) // 2, len(data) - 3):
        path.write_bytes(data[:size])
        with pytest.raises(UserError, match='net.pth is cut short'):
            load_weights(net(), str(path))


def test_a_file_of_other_tensors_is_not_a_checkpoint_of_the_network(tmp_path):
    path = tmp_path / 'tensors.pth'
    torch.save({'a': torch.randn(3), 'b': torch.randn(2, 2)}, path)
    with pytest.raises(UserError, match=r'tensors.pth holds 2 tensors \(a, b\) and none of the 122 weights of an '
                                        r'--arch resnet18_normalize network: it is not a checkpoint of an embedding '
                                        r'network; pass one that main.py wrote'):
        load_weights(net(), str(path))


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / 'notes.pth'
    path.write_text('hello')
    with pytest.raises(UserError, match='not a PyTorch checkpoint'):
        load_weights(net(), str(path))


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(UserError, match='no checkpoint at .*nothing.pth'):
        load_weights(net(), str(tmp_path / 'nothing.pth'))


def test_pickled_code_never_runs(code_payload, tmp_path):
    payload, marker = code_payload
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': net().state_dict(), 'payload': payload}, path)
    with pytest.raises(UserError, match='pickled Python objects'):
        load_weights(net(), str(path))
    assert not marker.exists()


def test_other_arch_and_other_embed_dim_are_named(tmp_path):
    path = tmp_path / 'r18.pth'
    save_checkpoint(str(path), net('resnet18', 8), {}, 0, {})
    with pytest.raises(UserError, match='another architecture'):
        load_weights(net('resnet34', 8), str(path))
    with pytest.raises(UserError, match='--embed_dim 8'):
        load_weights(net('resnet18', 16), str(path))


def test_dataparallel_prefix_and_wrapper_are_accepted(tmp_path):
    model = net()
    path = tmp_path / 'dp.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in model.state_dict().items()}}, path)
    other = net()
    load_weights(other, str(path))
    assert torch.equal(other.model.last_linear.weight, model.model.last_linear.weight)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / 'summary.json'
    path.write_text('old')

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(FileWriteError, match=r'cannot write .*summary.json \(No space left on device\)'):
        atomic_write_bytes(str(path), b'new')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['summary.json']
