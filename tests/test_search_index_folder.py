"""The index folder of Search_Index.py under hostile use: a user's files beside it, two builds at once, readers
while writers work (forced interleavings and real processes), damaged folders, and file names that are not UTF-8."""
import csv
import json
import os
import shutil
import subprocess
import sys

import faiss
import numpy as np
import pytest

from runs import ROOT, one_line_error
from search import index_store
from search.embedding import Embedder
from search.index_store import SearchIndex
from search_catalogues import COLOURS, build, query, search, write_catalogue, write_checkpoints, write_images


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp('checkpoints'))


@pytest.fixture(scope='module')
def catalogues(tmp_path_factory):
    """Two catalogues of 6 images (classes apple, grass, sky), and three folders of 2 images to add (class sun)."""
    root = tmp_path_factory.mktemp('catalogues')
    folders = {'first': write_catalogue(root / 'first', per_class=2),
               'second': write_catalogue(root / 'second', per_class=2, seed=10)}
    for k in range(3):
        write_images(root / f'more{k}' / 'sun', 2, COLOURS['sun'], seed=20 + k, start=2 * k)
        folders[f'more{k}'] = root / f'more{k}'
    return folders


def snapshot(folder):
    """{name: bytes} of the files of `folder`."""
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.slow
def test_a_build_never_touches_files_it_did_not_write(checkpoints, catalogues, tmp_path, capsys):
    project = tmp_path / 'proj'
    project.mkdir()
    (project / 'items-2024.csv').write_text('sku,price\n1,9.99\n')
    (project / 'index-1.faiss').write_bytes(b'my own file, not a faiss index')
    (project / 'notes.txt').write_text('mine')
    mine = snapshot(project)
    capsys.readouterr()
    code = search('build', '--checkpoint', checkpoints['main'], '--images', catalogues['first'], '--index', project)
    error = one_line_error(capsys, code)
    assert 'is not empty and holds no index (index-1.faiss, items-2024.csv, notes.txt)' in error
    assert '--allow_other_files' in error and snapshot(project) == mine

    build(checkpoints['main'], catalogues['first'], project, '--allow_other_files')
    assert len(SearchIndex.load(str(project))) == 6
    metadata = json.loads((project / 'metadata.json').read_text())
    assert metadata['index_file'] == 'index-2.faiss', 'index-1.faiss is the user\'s: the next free generation'
    for more in ('more0', 'more1', 'more2'):
        assert search('add', '--index', project, '--images', catalogues[more]) == 0
    build(checkpoints['main'], catalogues['second'], project, '--overwrite')
    assert {name: data for name, data in snapshot(project).items() if name in mine} == mine, 'the user\'s files stay'
    stored = SearchIndex.load(str(project))
    assert len(stored) == 6 and stored.paths[0].startswith(str(catalogues['second']))
    ours = {'metadata.json', stored.metadata['index_file'], stored.metadata['items_file'],
            *stored.metadata['kept_files']}
    assert set(os.listdir(project)) == set(mine) | ours, 'earlier generations are gone, nothing else'


@pytest.mark.slow
def test_a_build_checks_the_folder_again_once_it_holds_the_lock(checkpoints, catalogues, tmp_path, monkeypatch,
                                                                 capsys):
    """Forced interleaving: a second build writes the folder between the first one's look at it and its lock."""
    index = tmp_path / 'index'
    original = Embedder.from_checkpoint.__func__

    def another_build_first(cls, *args, **kwargs):
        monkeypatch.setattr(Embedder, 'from_checkpoint', classmethod(original))
        build(checkpoints['main'], catalogues['second'], index)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Embedder, 'from_checkpoint', classmethod(another_build_first))
    capsys.readouterr()
    code = search('build', '--checkpoint', checkpoints['main'], '--images', catalogues['first'], '--index', index)
    assert 'holds an index already' in one_line_error(capsys, code)
    stored = SearchIndex.load(str(index))
    assert all(path.startswith(str(catalogues['second'])) for path in stored.paths), 'the other build\'s index stays'


def build_process(checkpoint, images, index):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'Search_Index.py'), 'build', '--checkpoint',
                             str(checkpoint), '--images', str(images), '--index', str(index), '--workers', '0'],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_build_processes_at_once_one_builds_the_other_is_refused(checkpoints, catalogues, tmp_path):
    index = tmp_path / 'index'
    processes = {name: build_process(checkpoints['main'], catalogues[name], index) for name in ('first', 'second')}
    results = {name: (process.wait(300), process.stderr.read()) for name, process in processes.items()}
    for process in processes.values():
        process.stdout.close()
        process.stderr.close()
    (winner,) = [name for name, (code, _) in results.items() if code == 0]
    (loser,) = [name for name in results if name != winner]
    code, err = results[loser]
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'holds an index already' in err or 'is in use by another process' in err, err
    stored = SearchIndex.load(str(index))
    assert len(stored) == 6 and all(path.startswith(str(catalogues[winner])) for path in stored.paths)


def add(index, images):
    assert search('add', '--index', index, '--images', images) == 0


@pytest.mark.slow
def test_a_reader_keeps_its_generation_while_writers_replace_it(checkpoints, catalogues, tmp_path, monkeypatch):
    """Forced interleavings: two writes end while a reader reads the index (after its faiss file is opened), and
    two more between its faiss file and its items file."""
    index = build(checkpoints['main'], catalogues['first'], tmp_path / 'index')
    read_index, read_items = faiss.read_index, index_store.read_items

    def writes_during_read_index(*args):
        monkeypatch.setattr(faiss, 'read_index', read_index)
        add(index, catalogues['more0'])
        add(index, catalogues['more1'])
        return read_index(*args)

    monkeypatch.setattr(faiss, 'read_index', writes_during_read_index)
    stored = SearchIndex.load(str(index))
    assert len(stored) == 6 and stored.index.ntotal == 6 and stored.metadata['generation'] == 1

    def writes_during_read_items(*args):
        monkeypatch.setattr(index_store, 'read_items', read_items)
        add(index, catalogues['more2'])
        build(checkpoints['main'], catalogues['second'], index, '--overwrite')
        return read_items(*args)

    monkeypatch.setattr(index_store, 'read_items', writes_during_read_items)
    stored = SearchIndex.load(str(index))
    assert len(stored) == stored.index.ntotal == stored.metadata['count'] == 10 and stored.metadata['generation'] == 3
    assert stored.paths[-2:] == sorted(str(path) for path in (catalogues['more1'] / 'sun').iterdir())
    now = SearchIndex.load(str(index))
    assert now.metadata['generation'] == 5 and now.paths[0].startswith(str(catalogues['second']))


@pytest.mark.slow
def test_a_reader_reads_metadata_again_where_its_generation_went_before_it_opened_the_files(
        checkpoints, catalogues, tmp_path, monkeypatch, capsys):
    index = build(checkpoints['main'], catalogues['first'], tmp_path / 'index')
    opened = index_store.opened

    def two_writes_first(path):
        monkeypatch.setattr(index_store, 'opened', opened)
        add(index, catalogues['more0'])
        add(index, catalogues['more1'])
        return opened(path)

    monkeypatch.setattr(index_store, 'opened', two_writes_first)
    stored = SearchIndex.load(str(index))
    assert stored.metadata['generation'] == 3 and len(stored) == stored.index.ntotal == 10

    # A file taken away by hand (no writer) is named in one line.
    os.remove(index / stored.metadata['items_file'])
    capsys.readouterr()
    code = search('query', '--index', index, '--queries', catalogues['more0'])
    assert 'lacks items-3.csv, which its metadata.json names; the folder was changed by hand' in \
        one_line_error(capsys, code)


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
import Search_Index
index, checkpoint, folders = sys.argv[2], sys.argv[3], sys.argv[4:]
for folder in folders:
    assert Search_Index.main(['add', '--index', index, '--images', folder, '--workers', '0']) == 0
"""

READER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from search.index_store import SearchIndex
index, done = sys.argv[2], sys.argv[3]
seen = []
while True:
    finished = os.path.exists(done)
    stored = SearchIndex.load(index)
    assert len(stored) == stored.index.ntotal == stored.metadata['count'] == 6 + 2 * (stored.metadata['generation'] - 1)
    seen.append(stored.metadata['generation'])
    if finished:
        break
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_readers_in_other_processes_always_get_a_whole_generation(checkpoints, catalogues, tmp_path):
    index = build(checkpoints['main'], catalogues['first'], tmp_path / 'index')
    folders = []
    for k in range(6):
        folders.append(tmp_path / f'add{k}')
        write_images(folders[-1] / 'sun', 2, COLOURS['sun'], seed=40 + k, start=2 * k)
    done = tmp_path / 'writer_done'
    reader = subprocess.Popen([sys.executable, '-c', READER, ROOT, str(index), str(done)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    writer = subprocess.run([sys.executable, '-c', WRITER, ROOT, str(index), str(checkpoints['main']),
                             *map(str, folders)], capture_output=True, text=True, timeout=300)
    done.write_text('')
    out, err = reader.communicate(timeout=300)
    assert writer.returncode == 0, writer.stderr
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen == sorted(seen) and seen[-1] == 7, 'generations in order, the last one read at the end'


def write_metadata(index, change):
    path = index / 'metadata.json'
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


@pytest.mark.slow
def test_damaged_index_folders_are_one_line_errors_and_build_overwrite_recovers_them(checkpoints, catalogues,
                                                                                   tmp_path, capsys):
    pristine = build(checkpoints['main'], catalogues['first'], tmp_path / 'pristine')
    outside = tmp_path / 'outside.faiss'
    shutil.copyfile(pristine / 'index-1.faiss', outside)
    items = (pristine / 'items-1.csv').read_bytes()

    def cut_items(index):
        (index / 'items-1.csv').write_bytes(items[:items.index(b'\n', len(items) // 2) + 8])

    def cut_at_a_row(index):
        (index / 'items-1.csv').write_bytes(items[:items.index(b'\n', len(items) // 2) + 1])

    damages = {
        'items cut off in a row': (cut_items, 'items-1.csv is damaged (line'),
        'items cut off after a row': (cut_at_a_row, 'is inconsistent: 6 vectors of 16 dimensions,'),
        'no index_file': (lambda index: write_metadata(index, lambda m: m.pop('index_file')), 'lacks "index_file"'),
        'no items_file': (lambda index: write_metadata(index, lambda m: m.pop('items_file')), 'lacks "items_file"'),
        'no count': (lambda index: write_metadata(index, lambda m: m.pop('count')), 'lacks "count"'),
        'no embedding': (lambda index: write_metadata(index, lambda m: m.pop('embedding')), 'lacks "embedding"'),
        'no embed_dim': (lambda index: write_metadata(index, lambda m: m['embedding'].pop('embed_dim')),
                         'lacks "embedding": "embed_dim"'),
        'index outside': (lambda index: write_metadata(index, lambda m: m.update(index_file=str(outside))),
                          f"names '{outside}' as its index_file: not a file of this folder"),
        'index above': (lambda index: write_metadata(index, lambda m: m.update(index_file='../outside.faiss')),
                        "names '../outside.faiss' as its index_file"),
        'not JSON': (lambda index: (index / 'metadata.json').write_text('{"format": "obd_sd-search-in'),
                     'metadata.json is damaged (not JSON'),
    }
    for name, (damage, message) in damages.items():
        index = tmp_path / name.replace(' ', '_')
        shutil.copytree(pristine, index)
        (index / 'mine.txt').write_text('a file of mine')
        damage(index)
        for command in (['query', '--queries', catalogues['more0']], ['add', '--images', catalogues['more0']]):
            capsys.readouterr()
            code = search(command[0], '--index', index, *command[1:])
            error = one_line_error(capsys, code)
            assert message in error and 'build --overwrite' in error, (name, error)
        capsys.readouterr()
        code = search('build', '--checkpoint', checkpoints['main'], '--images', catalogues['second'], '--index', index)
        refusal = 'holds an index already' if name.startswith('items') else 'holds a damaged index'
        assert refusal in one_line_error(capsys, code), name
        build(checkpoints['main'], catalogues['second'], index, '--overwrite')
        stored = SearchIndex.load(str(index))
        assert len(stored) == 6 and stored.paths[0].startswith(str(catalogues['second'])), name
        assert (index / 'mine.txt').read_text() == 'a file of mine' and outside.is_file(), name


@pytest.mark.slow
def test_file_names_that_are_not_utf8_are_indexed_and_queried_byte_for_byte(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=2)
    odd = {os.fsdecode(os.fsencode(str(catalogue / 'apple')) + b'/caf\xe9.jpg'),
           os.fsdecode(os.fsencode(str(catalogue)) + b'/gr\xfcn/image.jpg')}
    os.makedirs(os.path.dirname(sorted(odd)[1]))
    for path, source in zip(sorted(odd), (catalogue / 'apple' / 'image_00.jpg', catalogue / 'grass' / 'image_01.jpg')):
        shutil.copyfile(source, path)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    stored = SearchIndex.load(str(index))
    assert odd <= set(stored.paths) and os.fsdecode(b'gr\xfcn') in stored.labels
    assert sorted(os.listdir(index)) == ['index-1.faiss', 'items-1.csv', 'metadata.json'], 'no orphan file'
    new = os.fsdecode(os.fsencode(str(tmp_path / 'new')) + b'/na\xefve.jpg')
    os.makedirs(os.path.dirname(new))
    shutil.copyfile(catalogue / 'sky' / 'image_01.jpg', new)
    assert search('add', '--index', index, '--images', os.path.dirname(new)) == 0
    assert SearchIndex.load(str(index)).paths[-1] == new

    found = query(index, new, tmp_path / 'hits.json', '-k', 20, '--classify')
    assert {n['path'] for n in found['queries'][0]['neighbours']} >= odd | {new}
    assert found['queries'][0]['query'] == new and os.path.isfile(found['queries'][0]['query'])
    assert search('query', '--index', index, '--queries', new, '-k', 20, '--out', tmp_path / 'hits.csv') == 0
    rows = (tmp_path / 'hits.csv').read_bytes()
    assert b'/caf\xe9.jpg' in rows and b'/gr\xfcn/image.jpg' in rows and b'/na\xefve.jpg' in rows
    with open(tmp_path / 'hits.csv', newline='', encoding='utf-8', errors='surrogateescape') as stream:
        assert {row['neighbour'] for row in csv.DictReader(stream)} >= odd
    capsys.readouterr()
    assert search('query', '--index', index, '--queries', new, '-k', 3, '--picture', tmp_path / 'hits.png') == 0
    printed = capsys.readouterr().out
    assert 'na\\udcefve.jpg' in printed, 'printed escaped, as Python prints to stderr'
    assert (tmp_path / 'hits.png').read_bytes()[:4] == b'\x89PNG'
    assert np.isfinite(SearchIndex.load(str(index)).index.reconstruct_n(0, 9)).all()
