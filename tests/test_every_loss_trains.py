"""Every loss of criteria.MODULES, plain and with OBD-SD (--PSD --OBDP), trains end to end through main.py on a tiny
generated dataset (timm's test_resnet at 32 px, one batch of 2 classes x 4 images an epoch)."""
import math

import pytest
import torch

import criteria
from runs import read_summary, recording_criteria, run_main, tiny_run_flags

pytestmark = pytest.mark.slow  # every test here completes a training run


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """cub200 layout, 6 classes x 4 images: 3 classes train, 3 test."""
    from conftest import fill_class_folder
    import numpy as np

    root = tmp_path_factory.mktemp('every_loss') / 'cub200'
    rng = np.random.default_rng(3)
    for k in range(6):
        fill_class_folder(root / 'images' / f'{k + 1:03d}.Bird_{k}', 4, 16, rng, mode_offset=k)
    return root


@pytest.mark.parametrize('obd_sd', [False, True], ids=['plain', 'obd_sd'])
@pytest.mark.parametrize('name', list(criteria.MODULES))
def test_every_loss_trains_through_main(name, obd_sd, data, tmp_path, monkeypatch):
    """Each step's loss is finite and sends a gradient into the embeddings; the epochs are evaluated; with OBD-SD
    the distillation term is on from epoch 1; the loss's own state (parameters, miner generators) is in last.pth."""
    steps = recording_criteria(monkeypatch)
    loss = name + '_obd_sd' if obd_sd else name
    epochs = 2 if obd_sd else 1
    # class_distinct: every batch holds 2 classes (class_random may draw one class twice: no negative, no signal)
    flags = tiny_run_flags(data, tmp_path, **{'--loss': loss, '--n_epochs': epochs, '--group': loss,
                                              '--data_sampler': 'class_distinct',
                                              '--PSD': None if obd_sd else False, '--OBDP': None if obd_sd else False})
    assert run_main(*flags) == 0
    folder = tmp_path / 'cub200' / loss
    history = read_summary(folder)['history']
    assert [entry['epoch'] for entry in history] == list(range(epochs))
    assert sorted({step['epoch'] for step in steps}) == list(range(epochs))
    for step in steps:
        assert math.isfinite(step['loss']) and step['gradient'] > 0, (loss, step)
    for entry in history:
        assert entry['skipped_nonfinite'] == 0 and 0 <= entry['e_recall@1'] <= 1 and 0 <= entry['nmi'] <= 1
    if obd_sd:
        assert history[0]['loss_kd'] == 0 and history[1]['loss_kd'] > 0
    saved = torch.load(folder / 'last.pth', weights_only=True)['training_state']['criterion']
    selected = criteria.select(loss, argparse_options(loss, obd_sd), n_classes=3)
    assert saved.keys() == selected.state_dict().keys()


def argparse_options(loss, obd_sd):
    import parameters

    return parameters.build_parser().parse_args(['--loss', loss, *(['--PSD', '--OBDP'] if obd_sd else [])])
