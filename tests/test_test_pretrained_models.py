"""Test_pretrained_models.py: the authors' evaluation commands on authors-layout checkpoints, and our own."""
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import architectures
import datasets
import evaluation
import parameters
from authors_checkpoint import authors_state_dict
from runs import TINY_ARCH, run_entry_point, run_main, tiny_run_flags
from run_folder.checkpoint import load_weights

PAPER_ARGS = ['--dataset', 'cub200', '--arch', 'resnet50_normalize_frozen_double', '--embed_dim', '128', '--PSD',
              '--OBDP']


def write_authors_checkpoints(root, setting, dataset):
    """Recall and NMI net.pth files in the authors' layout (the NMI one with another head)."""
    state = authors_state_dict()
    paths = {}
    for kind in ('Recall', 'NMI'):
        folder = root / kind / setting / dataset
        folder.mkdir(parents=True)
        if kind == 'NMI':
            state = dict(state, **{'model.last_linear.weight': state['model.last_linear.weight'].flip(0)})
        paths[kind] = folder / 'net.pth'
        torch.save(state, paths[kind])
    return paths


def reference_metrics(path, source, arch, metric_names):
    """The same evaluation done by hand: load the weights, embed the test split, compute metrics."""
    model = architectures.build(arch, 128, pretrained=False)
    load_weights(model, str(path))
    opt = parameters.parse_args(['--dataset', 'cub200', '--source', str(source), '--arch', arch])
    loader = torch.utils.data.DataLoader(datasets.select(opt)['testing'], batch_size=16)
    features, labels = evaluation.extract_embeddings(model, loader, 'cpu')
    return evaluation.compute_metrics(features, labels, metric_names, seed=opt.seed)


@pytest.mark.slow
def test_paper_evaluation_command_on_authors_checkpoints(make_cub200, tmp_path, capsys):
    data = make_cub200(n_classes=6, per_class=4)
    paths = write_authors_checkpoints(tmp_path / 'Training_Results', 'OBDSD_d128', 'cub200')
    out = tmp_path / 'results.json'
    code = run_entry_point('Test_pretrained_models', *PAPER_ARGS, '--source', data, '--kernels', '0',
                           '--checkpoint_root', tmp_path / 'Training_Results', '--out', out, '--plots',
                           tmp_path / 'plots')
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    recall = float(re.search(r'^Recall@1: ([0-9.]+)$', printed.out, re.M).group(1))
    nmi = float(re.search(r'^NMI: ([0-9.]+)$', printed.out, re.M).group(1))
    metric_names = ['e_recall@1', 'e_recall@2', 'e_recall@4', 'e_recall@8', 'nmi', 'f1', 'mAP@R']
    expected_recall = reference_metrics(paths['Recall'], data, PAPER_ARGS[3], metric_names)
    expected_nmi = reference_metrics(paths['NMI'], data, PAPER_ARGS[3], metric_names)
    assert abs(recall - expected_recall['e_recall@1']) < 1e-4 and abs(nmi - expected_nmi['nmi']) < 1e-4
    written = json.loads(out.read_text())['results']
    assert written['Recall']['metrics'] == expected_recall
    assert written['NMI']['checkpoint'] == str(paths['NMI'])
    assert 'mAP@R' in printed.out and 'f1' in printed.out
    for name in ('Recall_retrieval.png', 'Recall_tsne.png', 'NMI_retrieval.png', 'NMI_tsne.png'):
        pixels = np.asarray(Image.open(tmp_path / 'plots' / name).convert('RGB'))
        assert min(pixels.shape[:2]) > 200 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, name


def test_missing_released_checkpoint_names_path_and_source(make_cub200, tmp_path, capsys):
    data = make_cub200(n_classes=6, per_class=4)
    code = run_entry_point('Test_pretrained_models', '--dataset', 'cub200', '--source', data, '--embed_dim', '512',
                           '--PSD', '--OBDP', '--checkpoint_root', tmp_path)
    stderr = capsys.readouterr().err
    assert code == 2
    assert os.path.join(str(tmp_path), 'Recall', 'OBDSD_d512', 'cub200', 'net.pth') in stderr
    assert 'dropbox' in stderr and 'Traceback' not in stderr
    assert run_entry_point('Test_pretrained_models', '--dataset', 'cub200', '--source', data, '--PSD',
                           '--checkpoint_root', tmp_path) == 2
    assert os.path.join(str(tmp_path), 'Recall', 'PSD', 'cub200', 'net.pth') in capsys.readouterr().err


@pytest.mark.slow
def test_our_checkpoint_evaluates_with_its_own_arch(make_cub200, tmp_path):
    data = make_cub200(n_classes=6, per_class=4)
    assert run_main(*tiny_run_flags(data, tmp_path, **{'--n_epochs': 1})) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    summary = json.loads((folder / 'summary.json').read_text())
    out = tmp_path / 'ours.json'
    assert run_entry_point('Test_pretrained_models', '--dataset', 'cub200', '--source', data, '--kernels', '0',
                           '--image_size', '32', '--checkpoint', folder / 'best_e_recall@1.pth', '--out', out) == 0
    written = json.loads(out.read_text())['results']['checkpoint']
    assert written['arch'] == TINY_ARCH and written['embed_dim'] == 16
    assert abs(written['metrics']['e_recall@1'] - summary['best']['e_recall@1']) < 1e-6


@pytest.mark.slow
def test_evaluation_is_float32_unless_amp(make_cub200, tmp_path, monkeypatch):
    import Test_pretrained_models

    data = make_cub200(n_classes=6, per_class=4)
    assert run_main(*tiny_run_flags(data, tmp_path, **{'--n_epochs': 1})) == 0
    checkpoint = tmp_path / 'cub200' / 'tiny' / 'best_e_recall@1.pth'
    extract, amp_seen = evaluation.extract_embeddings, []

    def recording_extract(model, loader, device, amp=False):
        amp_seen.append(amp)
        return extract(model, loader, device, amp=amp)

    monkeypatch.setattr(evaluation.embeddings, 'extract_embeddings', recording_extract)
    common = ['--dataset', 'cub200', '--source', str(data), '--kernels', '0', '--image_size', '32',
              '--checkpoint', str(checkpoint)]
    assert Test_pretrained_models.main(common) == 0
    assert Test_pretrained_models.main(common + ['--amp']) == 0
    assert amp_seen == [False, True]


@pytest.mark.slow
def test_a_proxy_loss_run_evaluates_and_indexes_with_the_network_alone(make_cub200, tmp_path):
    """A SoftTriple run under --amp keeps its centroids in float32 in last.pth; its best checkpoint holds the network
    alone, evaluates to what the run reported and builds a search index."""
    data = make_cub200(n_classes=6, per_class=4)
    flags = {'--n_epochs': 1, '--loss': 'softtriplet_obd_sd', '--amp': None}
    assert run_main(*tiny_run_flags(data, tmp_path, **flags)) == 0
    folder = tmp_path / 'cub200' / 'tiny'
    criterion_state = torch.load(folder / 'last.pth', weights_only=True)['training_state']['criterion']
    assert criterion_state['base_loss.centroids'].dtype == torch.float32
    assert criterion_state['base_loss.centroids'].shape == (16, 3 * 2)  # embed_dim x (3 training classes x 2)
    best = folder / 'best_e_recall@1.pth'
    assert 'training_state' not in torch.load(best, weights_only=True)
    out = tmp_path / 'ours.json'
    assert run_entry_point('Test_pretrained_models', '--dataset', 'cub200', '--source', data, '--kernels', '0',
                           '--image_size', '32', '--amp', '--checkpoint', best, '--out', out) == 0
    reported = json.loads((folder / 'summary.json').read_text())['best']['e_recall@1']
    assert json.loads(out.read_text())['results']['checkpoint']['metrics']['e_recall@1'] == pytest.approx(reported)
    index = tmp_path / 'index'
    assert run_entry_point('Search_Index', 'build', '--checkpoint', best, '--images', data / 'images', '--index',
                           index, '--workers', 0) == 0
    found = tmp_path / 'found.json'
    query = next((data / 'images').glob('*/*.jpg'))
    assert run_entry_point('Search_Index', 'query', '--index', index, '--queries', query, '--out', found, '-k', 1,
                           '--workers', 0) == 0
    (neighbour,) = json.loads(found.read_text())['queries'][0]['neighbours']
    assert neighbour['path'] == str(query) and neighbour['similarity'] == pytest.approx(1, abs=1e-3)  # itself
