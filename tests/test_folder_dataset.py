"""--dataset folder: class folders or a split.csv, both trained on; bad lists; published-size warnings."""
import json
import logging
import os

import pytest

import datasets
import parameters
from datasets import cars196, cub200
from datasets.image_folder import Split
from datasets.split_checks import published_size_warning
from runs import run_main, tiny_run_flags
from plumbing.errors import UserError

# Class names with spaces and non-ASCII letters, as a file system allows them.
LEAVE_ONE_OUT = {'train': {'Grüner Apfel': 4, 'red pear': 4, 'Zitrone': 4},
                 'test': {'Café crème': 3, 'São Paulo kiwi': 3}}
QUERY_GALLERY = {'train': {'a': 4, 'b': 4}, 'query': {'x ü': 2, 'y': 2}, 'gallery': {'x ü': 2, 'y': 3, 'z': 2}}


def folder_opt(root, *flags):
    return parameters.parse_args(['--dataset', 'folder', '--source', str(root), '--image_size', '16', *flags])


def write_csv(root, rows, name='split.csv', header='path,label,split'):
    path = root / name
    path.write_text('\n'.join([header, *rows]) + '\n', encoding='utf-8')
    return path


def csv_rows(root):
    """path,label,split rows for every image under root/<split>/<class>/, the split folder named as the split."""
    rows = []
    for split in sorted(os.listdir(root)):
        for label in sorted(os.listdir(root / split)):
            for name in sorted(os.listdir(root / split / label)):
                rows.append(f'"{split}/{label}/{name}",{label},{split}')
    return rows


@pytest.mark.slow
def test_class_folders_train_and_the_run_reports_the_split_sizes(make_image_folder, tmp_path):
    root = make_image_folder(LEAVE_ONE_OUT)
    flags = tiny_run_flags(root, tmp_path, **{'--dataset': 'folder', '--n_epochs': 1, '--bs': 6,
                                              '--samples_per_class': 2})
    assert run_main(*flags) == 0
    log = (tmp_path / 'folder' / 'tiny' / 'log.txt').read_text(encoding='utf-8')
    assert 'split sizes: training 12 (3 classes), testing 6 (2 classes)' in log
    testing = datasets.select(folder_opt(root))['testing']
    assert testing.class_names == ['Café crème', 'São Paulo kiwi']


def test_query_gallery_class_folders_share_one_labelling(make_image_folder):
    data = datasets.select(folder_opt(make_image_folder(QUERY_GALLERY)))
    assert data['testing'] is None
    assert data['query'].class_names == data['gallery'].class_names == ['x ü', 'y', 'z']
    assert data['query'].labels.tolist() == [0, 0, 1, 1] and data['gallery'].labels.tolist() == [0, 0, 1, 1, 1, 2, 2]


@pytest.mark.slow
def test_split_csv_trains_query_gallery_and_reports_the_split_sizes(make_image_folder, tmp_path):
    root = make_image_folder(QUERY_GALLERY)
    write_csv(root, csv_rows(root))
    flags = tiny_run_flags(root, tmp_path, **{'--dataset': 'folder', '--n_epochs': 1, '--bs': 4,
                                              '--samples_per_class': 2})
    assert run_main(*flags) == 0
    log = (tmp_path / 'folder' / 'tiny' / 'log.txt').read_text(encoding='utf-8')
    assert 'split sizes: training 8 (2 classes), query 4 (2 classes), gallery 7 (3 classes)' in log
    summary = json.loads((tmp_path / 'folder' / 'tiny' / 'summary.json').read_text())
    (entry,) = summary['history']
    recall = entry['e_recall@1']
    assert summary['best']['e_recall@1'] == recall and recall in (0, 0.25, 0.5, 0.75, 1), 'a share of the 4 queries'
    assert 0 <= entry['mAP@R'] <= 1


def test_split_file_elsewhere_and_its_labels_are_any_string(make_image_folder, tmp_path):
    root = make_image_folder(LEAVE_ONE_OUT)
    rows = [row.replace(',test', ',train') if 'Café' in row else row for row in csv_rows(root)]
    rows = [row.replace('red pear,train', 'red pear,test') for row in rows]
    listing = write_csv(tmp_path, rows, name='mine.csv')
    _, splits, _ = datasets.load_splits(folder_opt(root, '--split_file', str(listing)))
    assert splits['training'].class_names == ['Café crème', 'Grüner Apfel', 'Zitrone']
    assert splits['testing'].class_names == ['São Paulo kiwi', 'red pear']


@pytest.mark.parametrize('rows, header, message', [
    ([], 'path,label', 'row 1: the header lacks the column\\(s\\) split'),
    (['train/a/image_00.jpg,,train'], None, 'row 2: empty label'),
    (['train/a/image_00.jpg,a,validation'], None, "row 2: unknown split 'validation'"),
    (['train/a/image_00.jpg,a,train', '../outside.jpg,a,train'], None, 'row 3: the path ../outside.jpg leaves'),
    (['/etc/passwd,a,train'], None, 'row 2: the path /etc/passwd leaves'),
    (['train/a/image_00.jpg,a,train', 'train/b/../a/image_00.jpg,b,train'], None,
     'row 3: train/b/../a/image_00.jpg is listed again \\(first in row 2\\)'),
    (['train/a/image_00.jpg,a,train', 'train/b/image_00.jpg,b,train'], None, 'no train split|evaluation split'),
    (['train/a/image_00.jpg,a,train', 'train/b/image_00.jpg,b,train', 'query/y/image_00.jpg,y,query'], None,
     'evaluation split\\(s\\) query; use either test, or query and gallery'),
    (['train/a/image_00.jpg,a,train', 'query/y/image_00.jpg,y,test', 'query/y/image_01.jpg,y,test'], None,
     'split.csv: the training split has 1 class'),
])
def test_bad_split_csv_names_the_row(make_image_folder, rows, header, message):
    root = make_image_folder(QUERY_GALLERY)
    write_csv(root, rows, header=header or 'path,label,split')
    with pytest.raises(UserError, match=f'{message}'):
        datasets.load_splits(folder_opt(root))


def test_listed_missing_image_is_named_with_its_row(make_image_folder, caplog):
    root = make_image_folder(LEAVE_ONE_OUT)
    write_csv(root, csv_rows(root) + ['"test/Café crème/gone.jpg",Café crème,test'])
    with caplog.at_level(logging.WARNING):
        data = datasets.select(folder_opt(root))
    assert len(data['testing'].left_out) == 1 and 'split.csv, row 20' in caplog.text


def test_test_classes_seen_in_training_are_allowed_with_a_warning(make_image_folder):
    root = make_image_folder({'train': {'a': 2, 'b': 2}, 'test': {'a': 2, 'c': 2}})
    data = datasets.select(folder_opt(root))
    assert len(data['warnings']) == 1 and "1 of the 2 evaluation classes also occur in training ('a')" in \
        data['warnings'][0]


def test_an_empty_class_folder_is_named(make_image_folder):
    root = make_image_folder(LEAVE_ONE_OUT)
    (root / 'test' / 'leer').mkdir()
    with pytest.raises(UserError, match='class folder .*test/leer has no images'):
        datasets.load_splits(folder_opt(root))


def test_a_folder_without_either_layout_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match='neither a split.csv nor train/ and test/'):
        datasets.load_splits(folder_opt(tmp_path))
    with pytest.raises(UserError, match='--split_file is for --dataset folder'):
        parameters.parse_args(['--dataset', 'cub200', '--split_file', 'x.csv'])


# ---------------------------------------------------------------- published sizes

@pytest.mark.slow
def test_a_small_cub200_folder_trains_with_a_warning_naming_both_counts(make_cub200, tmp_path, capsys):
    root = make_cub200(n_classes=4, per_class=4)
    assert run_main(*tiny_run_flags(root, tmp_path, **{'--n_epochs': 1})) == 0
    expected = ('cub200 at {}: training 8 images of 2 classes, testing 8 images of 2 classes; the published archive '
                'has training 5,864 images of 100 classes, testing 5,924 images of 100 classes: an incomplete '
                'download or extraction').format(root)
    assert expected in (tmp_path / 'cub200' / 'tiny' / 'log.txt').read_text()
    assert expected in capsys.readouterr().out
    # --dry_run lists the split files too: the same warning, on stderr, the printed configuration intact
    assert run_main('--dataset', 'cars196', '--source', str(root), '--dry_run') == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out[:printed.out.rindex('}') + 1])['dataset'] == 'cars196'
    assert 'splits listed: training 8 images of 2 classes, testing 8 images of 2 classes' in printed.out
    assert 'cars196 at' in printed.err and 'testing 8,131 images of 98 classes' in printed.err


def counted_splits(sizes):
    """Splits of the given {split: (images, classes)}."""
    return {name: Split([(f'{k}.jpg', k % classes) for k in range(images)], [str(k) for k in range(classes)])
            for name, (images, classes) in sizes.items()}


def test_the_counts_of_another_dataset_are_named():
    warning = published_size_warning(cars196, '/data/cars196', counted_splits(cub200.PUBLISHED_SIZES),
                                     datasets.MODULES)
    assert 'training 5,864 images of 100 classes' in warning and 'training 8,054 images of 98 classes' in warning
    assert 'these are the counts of cub200: is --source the cub200 folder?' in warning
    assert published_size_warning(cub200, '/data/cub200', counted_splits(cub200.PUBLISHED_SIZES),
                                  datasets.MODULES) is None
    more = dict(cub200.PUBLISHED_SIZES, testing=(6000, 100))
    assert 'extra or other files' in published_size_warning(cub200, '/d', counted_splits(more), datasets.MODULES)


def test_dry_run_lists_no_digits_it_would_have_to_export(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    assert run_main('--dataset', 'digits', '--dry_run') == 0
    assert not (tmp_path / 'cache').exists() and 'splits listed' not in capsys.readouterr().out
