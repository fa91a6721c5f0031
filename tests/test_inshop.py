"""In-Shop: the partition file, a run that reports query-vs-gallery metrics equal to the references, the exported
embeddings that give them, and resuming such a run."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

import datasets
import parameters
from query_gallery_reference import map_at_r, recall_at_k
from runs import read_summary, run_main, tiny_run_flags
from plumbing.errors import UserError

PARTITION = os.path.join('Eval', 'list_eval_partition.txt')


def inshop_opt(root, *flags):
    return parameters.parse_args(['--dataset', 'inshop', '--source', str(root), '--image_size', '16', *flags])


def edit_partition(root, edit):
    path = root / PARTITION
    lines = path.read_text().splitlines()
    path.write_text('\n'.join(edit(lines)) + '\n')


def test_partition_file_gives_training_items_and_a_shared_query_gallery_labelling(make_inshop):
    root = make_inshop(n_train_items=3, n_eval_items=4)
    root_found, splits, _ = datasets.load_splits(inshop_opt(root.parent))
    assert root_found == str(root)
    assert splits['training'].class_names == ['id_00000001', 'id_00000002', 'id_00000003']
    assert splits['query'].class_names == splits['gallery'].class_names == [f'id_{k:08d}' for k in range(4, 8)]
    for split in ('query', 'gallery'):
        for path, label in splits[split].samples:
            assert f'/{splits[split].class_names[label]}/' in path and path.startswith(str(root / 'Img' / 'img'))
    data = datasets.select(inshop_opt(root))
    assert data['testing'] is None and len(data['query']) == len(data['gallery']) == 8
    assert set(datasets.test_parts(data)) == {'query', 'gallery'}


@pytest.mark.parametrize('edit, message', [
    (lambda lines: ['x'] + lines[1:], 'line 1: expected the number of images'),
    (lambda lines: [lines[0], 'image_name item evaluation_status'] + lines[2:], 'line 2: expected the header'),
    (lambda lines: lines[:3] + [lines[3].replace('train', 'val')] + lines[4:],
     "line 4: unknown evaluation_status 'val'"),
    (lambda lines: [str(int(lines[0]) + 1)] + lines[1:], 'line 1: says 25 images, but the file lists 24'),
    (lambda lines: lines + [lines[5]], 'line 27: img/.* is listed again \\(first on line 6\\)'),
    (lambda lines: lines[:3] + [lines[3] + ' extra'] + lines[4:], 'line 4: expected'),
    (lambda lines: [str(int(lines[0]) - 8)] + [line for line in lines[1:] if 'id_00000001' not in line
                                               and 'id_00000002' not in line], 'the train split has 1 class'),
])
def test_bad_partition_file_names_the_file_and_line(make_inshop, edit, message):
    root = make_inshop()
    edit_partition(root, edit)
    with pytest.raises(UserError, match=f'list_eval_partition.txt(, |: ){message}'):
        datasets.load_splits(inshop_opt(root))


def test_missing_listed_image_is_named_with_its_line_left_out_and_counted(make_inshop, caplog):
    root = make_inshop()
    listed = (root / PARTITION).read_text().splitlines()[-1].split()[0]  # the last gallery image
    os.remove(root / 'Img' / listed)
    with caplog.at_level(logging.WARNING):
        data = datasets.select(inshop_opt(root))
    assert len(data['gallery']) == 5 and data['gallery'].left_out == [str(root / 'Img' / listed)]
    assert 'list_eval_partition.txt, line 26' in caplog.text and 'left out 1 unreadable images' in caplog.text


def test_a_missing_partition_file_names_the_download_page(make_inshop):
    root = make_inshop()
    os.remove(root / PARTITION)
    with pytest.raises(UserError, match='InShopRetrieval.html'):
        datasets.load_splits(inshop_opt(root))


def pml_metrics(npz):
    """pytorch-metric-learning's precision@1 and MAP@R of the exported query and gallery embeddings."""
    def normalised(name):
        return torch.nn.functional.normalize(torch.from_numpy(npz[name]), dim=1)

    calculator = AccuracyCalculator(include=('precision_at_1', 'mean_average_precision_at_r'),
                                    k=len(npz['gallery_labels']), device=torch.device('cpu'))
    return calculator.get_accuracy(normalised('query_features'), torch.from_numpy(npz['query_labels']),
                                   normalised('gallery_features'), torch.from_numpy(npz['gallery_labels']),
                                   ref_includes_query=False)


@pytest.mark.slow
def test_inshop_run_reports_query_gallery_metrics_its_exported_embeddings_give(make_inshop, tmp_path):
    import Test_pretrained_models

    root = make_inshop(n_train_items=3, n_eval_items=12, query_per_item=2, gallery_per_item=3)
    metrics = ['e_recall@1', 'e_recall@10', 'e_recall@20', 'e_recall@30', 'mAP@R']
    flags = tiny_run_flags(root, tmp_path, **{'--dataset': 'inshop', '--n_epochs': 1,
                                              '--evaluation_metrics': metrics})
    assert run_main(*flags) == 0
    folder = tmp_path / 'inshop' / 'tiny'
    reported = read_summary(folder)['history'][0]
    log = (folder / 'log.txt').read_text()
    assert 'query 24 (12 classes), gallery 36 (12 classes)' in log
    assert 'the published archive has training 25,882 images of 3,997 classes' in log
    assert (folder / 'retrieval.png').is_file()

    npz_path, out = tmp_path / 'inshop.npz', tmp_path / 'results.json'
    assert Test_pretrained_models.main(['--dataset', 'inshop', '--source', str(root), '--kernels', '0',
                                        '--image_size', '32', '--evaluation_metrics', *metrics, 'rho_spectrum@0',
                                        'mAP_c', '--checkpoint', str(folder / 'best_e_recall@1.pth'),
                                        '--save_embeddings', str(npz_path), '--out', str(out),
                                        '--plots', str(tmp_path / 'plots')]) == 0
    assert sorted(os.listdir(tmp_path / 'plots')) == ['checkpoint_retrieval.png', 'checkpoint_tsne.png']
    npz = np.load(npz_path)
    assert sorted(npz.files) == sorted(f'{part}_{key}' for part in ('query', 'gallery')
                                       for key in ('features', 'labels', 'paths'))
    assert npz['query_paths'][0].startswith(str(root / 'Img' / 'img')) and npz['gallery_features'].shape == (36, 16)
    evaluated = json.loads(out.read_text())['results']['checkpoint']['metrics']
    assert len(evaluated['rho_spectrum@0']) == 15 and evaluated['mAP_c'] == pytest.approx(evaluated['mAP@R']), (
        'the spectrum of query and gallery (16-D); query/gallery mAP_c divides by R as MAP@R')
    arrays = npz['query_features'], npz['query_labels'], npz['gallery_features'], npz['gallery_labels']
    theirs = pml_metrics(npz)
    for k in (1, 10, 20, 30):
        assert reported[f'e_recall@{k}'] == pytest.approx(recall_at_k(*arrays, k), abs=1e-9)
        assert evaluated[f'e_recall@{k}'] == pytest.approx(reported[f'e_recall@{k}'], abs=1e-9)
    assert reported['e_recall@1'] == pytest.approx(theirs['precision_at_1'])
    assert reported['mAP@R'] == pytest.approx(map_at_r(*arrays)) == pytest.approx(
        theirs['mean_average_precision_at_r'])
    assert reported['e_recall@1'] < 1  # the check is not trivial: some query misses at rank 1

    assert run_main('--resume', folder, '--n_epochs', '2') == 0
    history = read_summary(folder)['history']
    assert [entry['epoch'] for entry in history] == [0, 1] and history[0] == reported
    resumed = history[1]
    assert 0 <= resumed['e_recall@1'] <= resumed['e_recall@10'] <= resumed['e_recall@30'] <= 1
    assert 0 <= resumed['mAP@R'] <= 1, 'the resumed epoch evaluated query against gallery'


def test_embeddings_file_per_checkpoint_and_an_unwritable_path(make_inshop, tmp_path):
    import Test_pretrained_models

    assert Test_pretrained_models.embeddings_file('out/emb.npz', 'checkpoint', 1) == 'out/emb.npz'
    assert Test_pretrained_models.embeddings_file('out/emb.npz', 'NMI', 2) == 'out/emb_NMI.npz'
    target = tmp_path / 'no' / 'emb.npz'
    with pytest.raises(UserError, match=f'--save_embeddings {target}: the folder {target.parent} does not exist'):
        Test_pretrained_models.main(['--dataset', 'inshop', '--source', str(make_inshop()),
                                     '--checkpoint', str(tmp_path / 'none.pth'), '--save_embeddings', str(target)])
