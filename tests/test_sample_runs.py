"""Every command of Sample_Runs/SampleRuns.sh and vit_runs.sh passes --dry_run; SampleRuns.sh covers the paper's runs,
vit_runs.sh MS and MS + OBD-SD with a ViT-S/16 DINO on each dataset."""
import csv
import json
import os
import shlex

import pytest

from authors_checkpoint import FIXTURES
from runs import ROOT, run_main


def sample_commands(script='SampleRuns.sh'):
    text = open(os.path.join(ROOT, 'Sample_Runs', script)).read().replace('\\\n', ' ')
    return [shlex.split(line)[2:] for line in text.splitlines() if line.startswith('python main.py')]


def flag(args, name, default='-'):
    return args[args.index(name) + 1] if name in args else default


@pytest.fixture(scope='module')
def datapath(tmp_path_factory):
    """A parent folder holding tiny cub200, cars196, online_products and inshop folders."""
    import numpy as np
    from conftest import fill_class_folder, write_inshop

    parent = tmp_path_factory.mktemp('datapath')
    rng = np.random.default_rng(0)
    for k in range(4):
        fill_class_folder(parent / 'cub200' / 'images' / f'{k + 1:03d}.Bird_{k}', 2, 8, rng, mode_offset=k)
        fill_class_folder(parent / 'cars196' / 'images' / f'Car Model {k}', 2, 8, rng, mode_offset=k)
    sop = parent / 'online_products'
    fill_class_folder(sop / 'images' / 'bicycle_final', 8, 8, rng, mode_offset=0)
    names = sorted(os.listdir(sop / 'images' / 'bicycle_final'))
    (sop / 'Info_Files').mkdir()
    for split, part in (('train', names[:4]), ('test', names[4:])):
        first_class = 1 if split == 'train' else 3
        rows = [f'{i + 1} {first_class + i // 2} 1 bicycle_final/{n}' for i, n in enumerate(part)]
        header = 'image_id class_id super_class_id path\n'
        (sop / 'Info_Files' / f'Ebay_{split}.txt').write_text(header + '\n'.join(rows))
    write_inshop(parent / 'inshop', image_size=8)
    return parent


@pytest.mark.parametrize('args', sample_commands() + sample_commands('vit_runs.sh'),
                         ids=lambda args: flag(args, '--group'))
def test_sample_run_passes_dry_run(args, datapath, capsys):
    args = [a.replace('$datapath', str(datapath)) for a in args]
    assert run_main(*args, '--dry_run') == 0
    printed = capsys.readouterr().out
    config = json.loads(printed[:printed.rindex('}') + 1])
    assert config['resolved_dataset_folder'] == os.path.join(str(datapath), flag(args, '--dataset'))
    assert config['data_sampler'] == 'class_random'
    assert 'batches: class_random (each class draw and each image WITH replacement' in printed


def test_sample_runs_cover_the_papers_runs():
    with open(os.path.join(FIXTURES, 'paper_runs.tsv')) as stream:
        rows = list(csv.DictReader((line for line in stream if not line.startswith('#')), delimiter='\t'))
    commands = {flag(args, '--group'): args for args in sample_commands()}
    for row in rows:
        args = commands[row['group']]
        assert flag(args, '--dataset') == row['dataset'] and flag(args, '--n_epochs') == row['n_epochs']
        assert flag(args, '--arch') == row['arch'] and flag(args, '--embed_dim') == row['embed_dim']
        for name in ('kd_lambda', 'diffusion_w', 'diffusion_tau', 'gamma', 'bs', 'samples_per_class', 'loss', 'seed',
                     'kernels'):
            assert flag(args, '--' + name) == row[name], (row['group'], name)
        tau = ' '.join(args[args.index('--tau') + 1:args.index('--tau') + 3]) if '--tau' in args else '-'
        assert tau == row['tau']
        assert ('--PSD' in args) == (row['PSD'] == 'yes') and ('--OBDP' in args) == (row['OBDP'] == 'yes')
    psd_only = [args for args in commands.values() if '--PSD' in args and '--OBDP' not in args]
    assert {flag(args, '--dataset') for args in psd_only} == {'cub200', 'cars196', 'online_products'}


def test_vit_runs_are_ms_and_ms_obd_sd_with_a_dino_vit_on_every_dataset():
    commands = sample_commands('vit_runs.sh')
    settings = {(flag(args, '--dataset'), '--PSD' in args and '--OBDP' in args) for args in commands}
    assert settings == {(dataset, obd_sd) for dataset in ('cub200', 'cars196', 'online_products', 'inshop')
                        for obd_sd in (False, True)}
    assert len(commands) == len(settings)
    for args in commands:
        assert flag(args, '--arch') == 'vit_small_patch16_224.dino_normalize' and flag(args, '--optim') == 'adamw'
        assert (flag(args, '--lr'), flag(args, '--decay'), flag(args, '--clip_grad')) == ('1e-5', '0.01', '3')
