"""Search_Index.py: build an index of a generated catalogue, add to it, query it (exact neighbours, self-exclusion,
degenerate catalogues), kNN classification with a calibrated threshold, and one-line refusals."""
import json
import os
import shutil

import faiss
import numpy as np
import pytest
from PIL import Image

from conftest import write_corrupt, write_truncated
from runs import one_line_error
from search import index_store, knn
from search.catalogue import read_catalogue
from search.embedding import Embedder
from search.index_store import SearchIndex
from search_catalogues import ARCH, COLOURS, DIM, build, query, search, write_catalogue, write_checkpoints, write_images


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp('checkpoints'))


def index_vectors(index):
    """The stored embeddings of a flat index, row by row."""
    metadata = json.loads((index / 'metadata.json').read_text())
    stored = faiss.read_index(str(index / metadata['index_file']))
    # np.asarray: where pytorch-metric-learning has imported faiss.contrib.torch_utils, faiss returns torch tensors.
    return np.asarray(stored.reconstruct_n(0, stored.ntotal)), metadata


def query_vectors(checkpoint, paths, metadata, bs=64):
    """The embeddings of `paths` as the query command makes them (same pipeline, same batches)."""
    embedder = Embedder(str(checkpoint), metadata['embedding'], 'cpu')
    vectors = {}
    for positions, features in embedder.embed_batches([str(p) for p in paths], batch_size=bs):
        vectors.update({str(paths[p]): f for p, f in zip(positions, features)})
    return vectors


def assert_brute_force(found, catalogue_vectors, query_vector, k, exclude=None):
    """`found` (neighbour dicts) are the k most cosine-similar rows of `catalogue_vectors` to `query_vector`: the
    same similarities in the same order, each the true similarity of its row, and the same rows where no tie."""
    similarities = catalogue_vectors.astype(np.float64) @ query_vector.astype(np.float64)
    candidates = np.array([row for row in range(len(similarities)) if row != exclude])
    order = candidates[np.lexsort((candidates, -similarities[candidates]))][:k]
    rows = np.array([neighbour['id'] for neighbour in found])
    got = np.array([neighbour['similarity'] for neighbour in found])
    assert len(found) == len(order) and len(set(rows)) == len(rows)
    assert np.allclose(got, similarities[order], atol=1e-5)
    assert np.allclose(got, similarities[rows], atol=1e-5), 'each similarity is that of its own row'
    gaps = np.diff(similarities[order])
    untied = np.ones(len(order), bool)
    untied[:-1] &= np.abs(gaps) > 1e-5
    untied[1:] &= np.abs(gaps) > 1e-5
    assert np.array_equal(rows[untied], order[untied])


@pytest.mark.slow
def test_query_neighbours_equal_a_brute_force_cosine_search(checkpoints, tmp_path):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=5)
    queries = write_images(tmp_path / 'queries', 4, COLOURS['sky'], seed=9)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    result = query(index, tmp_path / 'queries', tmp_path / 'hits.json', '-k', 6)
    vectors, metadata = index_vectors(index)
    assert vectors.shape == (15, DIM) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert metadata['checkpoint']['sha256'] and metadata['embedding']['arch'] == ARCH
    wanted = query_vectors(checkpoints['main'], queries, metadata)
    assert [record['query'] for record in result['queries']] == [str(p) for p in queries]
    for record in result['queries']:
        assert_brute_force(record['neighbours'], vectors, wanted[record['query']], 6)
        assert [n['rank'] for n in record['neighbours']] == list(range(1, 7))
        assert all(n['label'] in COLOURS for n in record['neighbours'])
        assert record['query_label'] is None  # a plain folder of queries has no labels

    # An IVF index searched in every list is exact too: the same neighbours.
    ivf = build(checkpoints['main'], catalogue, tmp_path / 'ivf', '--index_type', 'ivf', '--nlist', 2)
    approximate = query(ivf, tmp_path / 'queries', tmp_path / 'ivf.json', '-k', 6, '--nprobe', 2)
    assert approximate['summary']['search_parameters'] == {'nprobe': 2}
    for exact, searched in zip(result['queries'], approximate['queries']):
        assert [n['path'] for n in exact['neighbours']] == [n['path'] for n in searched['neighbours']]


@pytest.mark.slow
def test_add_appends_images_and_queries_find_them(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue')
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    new = write_images(tmp_path / 'new' / 'sun', 3, COLOURS['sun'], seed=5)
    assert search('add', '--index', index, '--images', tmp_path / 'new') == 0
    grown = SearchIndex.load(str(index))
    assert len(grown) == 15 and grown.paths[12:] == [str(p) for p in new] and grown.labels[12:] == ['sun'] * 3
    assert sorted(os.listdir(index)) == ['index-1.faiss', 'index-2.faiss', 'items-1.csv', 'items-2.csv',
                                         'metadata.json'], 'generation 1 is kept for the readers still reading it'
    assert [entry['command'] for entry in grown.metadata['history']] == ['build', 'add']

    result = query(index, new[1], tmp_path / 'hit.json', '-k', 15)
    vectors, metadata = index_vectors(index)
    found = result['queries'][0]['neighbours']
    assert found[0]['path'] == str(new[1]) and found[0]['similarity'] == pytest.approx(1, abs=1e-5)
    assert_brute_force(found, vectors, query_vectors(checkpoints['main'], [new[1]], metadata)[str(new[1])], 15)

    # A path already in the index is refused, in one line; --skip_existing adds only the new ones.
    capsys.readouterr()
    code = search('add', '--index', index, '--images', tmp_path / 'new')
    assert 'are in' in one_line_error(capsys, code) and len(SearchIndex.load(str(index))) == 15
    more = write_images(tmp_path / 'new' / 'sun', 1, COLOURS['sun'], seed=6, start=3)
    assert search('add', '--index', index, '--images', tmp_path / 'new', '--skip_existing') == 0
    assert SearchIndex.load(str(index)).paths[12:] == [str(p) for p in new + more]
    assert sorted(os.listdir(index)) == ['index-2.faiss', 'index-3.faiss', 'items-2.csv', 'items-3.csv',
                                         'metadata.json'], 'the third write removed generation 1'


@pytest.mark.slow
def test_exclude_self_leaves_out_the_query_itself_and_only_it(checkpoints, tmp_path):
    catalogue = write_catalogue(tmp_path / 'catalogue')
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    vectors, metadata = index_vectors(index)
    paths = SearchIndex.load(str(index)).paths
    wanted = query_vectors(checkpoints['main'], paths, metadata)
    with_self = query(index, catalogue, tmp_path / 'all.json', '-k', 4)
    without = query(index, catalogue, tmp_path / 'others.json', '-k', 4, '--exclude_self')
    assert without['summary']['exclude_self'] and len(without['queries']) == 12
    for row, (kept, excluded) in enumerate(zip(with_self['queries'], without['queries'])):
        assert kept['neighbours'][0]['id'] == row and kept['query_label'] == paths[row].split(os.sep)[-2]
        assert row not in [n['id'] for n in excluded['neighbours']] and len(excluded['neighbours']) == 4
        assert_brute_force(excluded['neighbours'], vectors, wanted[excluded['query']], 4, exclude=row)
        assert [n['id'] for n in excluded['neighbours']][:3] == [n['id'] for n in kept['neighbours']][1:4]


@pytest.mark.slow
def test_duplicate_images_tie_and_come_in_row_order(checkpoints, tmp_path):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=3)
    original = catalogue / 'apple' / 'image_00.jpg'
    copies = [catalogue / 'apple' / f'copy_{k}.jpg' for k in range(2)]
    for copy in copies:
        shutil.copyfile(original, copy)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    rows = {path: row for row, path in enumerate(SearchIndex.load(str(index)).paths)}
    twins = sorted(rows[str(path)] for path in [original, *copies])
    found = query(index, original, tmp_path / 'hit.json', '-k', 3)['queries'][0]['neighbours']
    assert [n['id'] for n in found] == twins, 'three equal images: the tie in row order'
    assert all(n['similarity'] == pytest.approx(1, abs=1e-5) for n in found)
    others = query(index, original, tmp_path / 'others.json', '-k', 2, '--exclude_self')['queries'][0]['neighbours']
    assert [n['id'] for n in others] == [row for row in twins if row != rows[str(original)]]


@pytest.mark.slow
def test_a_catalogue_of_one_image_and_k_larger_than_the_index(checkpoints, tmp_path):
    single = write_images(tmp_path / 'one', 1, COLOURS['sky'], seed=3)[0]
    for index_type in ('flat', 'ivf', 'hnsw'):
        index = build(checkpoints['main'], single, tmp_path / index_type, '--index_type', index_type)
        found = query(index, single, tmp_path / f'{index_type}.json', '-k', 50)['queries'][0]['neighbours']
        assert [n['path'] for n in found] == [str(single)], index_type
        alone = query(index, single, tmp_path / f'{index_type}_alone.csv', '-k', 50, '--exclude_self')
        assert alone == [], 'no neighbour but itself: none left'
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=2)
    index = build(checkpoints['main'], catalogue, tmp_path / 'six')
    rows = query(index, catalogue / 'sky', tmp_path / 'many.csv', '-k', 50)
    assert len(rows) == 2 * 6 and {row['rank'] for row in rows} == {str(r) for r in range(1, 7)}


@pytest.mark.slow
def test_unreadable_images_are_named_once_each_and_left_out(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue')
    corrupt, truncated = catalogue / 'apple' / 'zz_corrupt.jpg', catalogue / 'grass' / 'zz_truncated.jpg'
    write_corrupt(corrupt)
    write_truncated(truncated, np.random.default_rng(0))
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    out = capsys.readouterr().out
    for path in (corrupt, truncated):
        named = [line for line in out.splitlines() if str(path) in line]
        assert len(named) == 1 and 'leaving it out' in named[0], out
    stored = SearchIndex.load(str(index))
    assert len(stored) == 12 and str(corrupt) not in stored.paths and str(truncated) not in stored.paths
    assert stored.metadata['history'][0]['left_out'] == 2

    code = search('query', '--index', index, '--queries', corrupt)
    assert 'none of the 1 query images' in one_line_error(capsys, code)


def test_an_empty_folder_is_a_one_line_error(checkpoints, tmp_path, capsys):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    code = search('build', '--checkpoint', checkpoints['main'], '--images', tmp_path / 'empty', '--index',
                  tmp_path / 'index')
    assert 'holds no images' in one_line_error(capsys, code)
    assert not (tmp_path / 'index').exists(), 'nothing written'


@pytest.mark.slow
def test_another_checkpoint_or_embedding_size_is_refused_in_one_line(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=2)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    before = sorted(os.listdir(index))
    capsys.readouterr()
    for name, expected in (('other', f'{DIM}-d embeddings'), ('narrow', '8-d embeddings')):
        for command, flag in (('add', '--images'), ('query', '--queries')):
            code = search(command, '--index', index, flag, catalogue, '--checkpoint', checkpoints[name],
                          *(['--skip_existing'] if command == 'add' else []))
            error = one_line_error(capsys, code)
            assert 'was built with the checkpoint' in error and expected in error, error
    assert sorted(os.listdir(index)) == before and len(SearchIndex.load(str(index))) == 6


@pytest.mark.slow
def test_csv_lists_splits_and_unlabelled_folders(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=2)
    listing = tmp_path / 'catalogue' / 'list.csv'
    rows = [('apple/image_00.jpg', 'apple', 'gallery'), ('apple/image_01.jpg', 'apple', 'query'),
            ('sky/image_00.jpg', '', 'gallery'), (str(catalogue / 'grass' / 'image_00.jpg'), 'grass', 'gallery')]
    listing.write_text('path,label,split\n' + ''.join(f'"{p}",{label},{split}\n' for p, label, split in rows))
    index = build(checkpoints['main'], listing, tmp_path / 'index', '--split', 'gallery')
    stored = SearchIndex.load(str(index))
    assert stored.paths == [str(catalogue / 'apple' / 'image_00.jpg'), str(catalogue / 'sky' / 'image_00.jpg'),
                            str(catalogue / 'grass' / 'image_00.jpg')]
    assert stored.labels == ['apple', None, 'grass'] and stored.splits == ['gallery'] * 3
    result = query(index, listing, tmp_path / 'q.json', '--split', 'query', '-k', 2)
    assert [r['query_label'] for r in result['queries']] == ['apple']

    listing.write_text('path,label\napple/image_00.jpg,apple\n,apple\n')
    code = search('build', '--checkpoint', checkpoints['main'], '--images', listing, '--index', tmp_path / 'bad')
    assert f'{listing}, row 3: empty path' in one_line_error(capsys, code)

    plain = tmp_path / 'plain'
    write_images(plain, 2, COLOURS['sun'], seed=1)
    assert all(label is None for label in read_catalogue(str(plain)).labels)
    unlabelled = build(checkpoints['main'], plain, tmp_path / 'plain_index')
    code = search('query', '--index', unlabelled, '--queries', plain, '--classify')
    assert 'holds no labels' in one_line_error(capsys, code)


@pytest.mark.slow
def test_the_catalogue_goes_to_faiss_in_chunks(checkpoints, tmp_path, monkeypatch):
    catalogue = write_catalogue(tmp_path / 'catalogue')
    whole = build(checkpoints['main'], catalogue, tmp_path / 'whole')
    added = []
    monkeypatch.setattr(index_store, 'ADD_CHUNK', 5)
    original_add = faiss.IndexFlat.add  # what index_factory('Flat') builds
    monkeypatch.setattr(faiss.IndexFlat, 'add', lambda self, x: (added.append(len(x)), original_add(self, x))[1])
    chunked = build(checkpoints['main'], catalogue, tmp_path / 'chunked', '--bs', 4)
    assert added == [5, 5, 2]
    assert np.allclose(index_vectors(whole)[0], index_vectors(chunked)[0], atol=1e-6)
    assert not [name for name in os.listdir(chunked) if name.endswith('.tmp')], 'the embeddings file is gone'


@pytest.mark.slow
def test_a_write_that_stops_half_way_leaves_the_index_whole(checkpoints, tmp_path, monkeypatch):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=2)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')

    def disk_full(*args):
        raise OSError(28, 'No space left on device')

    before = (index / 'metadata.json').read_bytes()
    new = write_images(tmp_path / 'new', 2, COLOURS['sun'], seed=4)
    for failure in (disk_full, lambda *args: ''.encode('ascii', 'strict') + 'é'.encode('ascii')):
        monkeypatch.setattr(index_store, 'write_items', failure)
        assert search('add', '--index', index, '--images', tmp_path / 'new') in (1, 2)
        assert len(SearchIndex.load(str(index))) == 6, 'the previous generation is intact'
        assert sorted(os.listdir(index)) == ['index-1.faiss', 'items-1.csv', 'metadata.json'], 'no orphan file'
        assert (index / 'metadata.json').read_bytes() == before
    monkeypatch.undo()
    assert search('add', '--index', index, '--images', tmp_path / 'new') == 0
    assert SearchIndex.load(str(index)).paths[6:] == [str(p) for p in new]
    assert sorted(os.listdir(index)) == ['index-1.faiss', 'index-2.faiss', 'items-1.csv', 'items-2.csv',
                                         'metadata.json']


@pytest.mark.slow
def test_picture_of_the_first_queries(checkpoints, tmp_path):
    catalogue = write_catalogue(tmp_path / 'catalogue')
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    query(index, catalogue, tmp_path / 'hits.csv', '-k', 3, '--picture', tmp_path / 'hits.png',
          '--picture_queries', 2)
    pixels = np.asarray(Image.open(tmp_path / 'hits.png').convert('RGB'))
    one = np.asarray(Image.open(write_picture_of(index, catalogue, tmp_path, 1)).convert('RGB'))
    assert pixels.shape[1] > 4 * 96 and pixels.shape[0] > one.shape[0] + 96, 'two rows of query + 3 neighbours'
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, 'the images themselves are in the picture'


def write_picture_of(index, catalogue, tmp_path, n):
    query(index, catalogue, tmp_path / 'one.csv', '-k', 3, '--picture', tmp_path / 'one.png', '--picture_queries', n)
    return tmp_path / 'one.png'


@pytest.mark.slow
def test_calibrated_threshold_keeps_the_false_match_rate_and_classify_uses_it(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=4)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    labelled = write_catalogue(tmp_path / 'labelled', per_class=2, classes=('apple', 'sky', 'sun'), seed=20)
    capsys.readouterr()
    assert search('calibrate', '--index', index, '--queries', labelled, '-k', 3, '--max_false_match', 0.2,
                  '--out', tmp_path / 'calibration.json') == 0
    printed = capsys.readouterr().out
    calibration = json.loads((tmp_path / 'calibration.json').read_text())
    assert SearchIndex.load(str(index)).metadata['calibration'] == calibration
    assert calibration['k'] == 3 and calibration['queries'] == 6 and calibration['queries_of_other_classes'] == 2
    assert f'false-match rate {calibration["false_match_rate"]:.4f}' in printed
    assert calibration['false_match_rate'] <= 0.2
    assert calibration['false_match_rate'] + calibration['correct_rate'] + calibration['unknown_rate'] == \
        pytest.approx(1)

    result = query(index, labelled, tmp_path / 'answers.json', '--classify')
    assert result['summary']['threshold'] == calibration['threshold'] and result['summary']['k'] == 3
    answers = [(r['prediction'], r['query_label']) for r in result['queries']]
    wrong = sum(answer is not None and answer != truth for answer, truth in answers)
    right = sum(answer == truth for answer, truth in answers)
    assert wrong / 6 == pytest.approx(calibration['false_match_rate'])
    assert right / 6 == pytest.approx(calibration['correct_rate'])
    for record in result['queries']:
        answer, confidence = knn.vote([n['label'] for n in record['neighbours']],
                                      [n['similarity'] for n in record['neighbours']])
        assert record['prediction'] == knn.thresholded(answer, confidence, calibration['threshold'])
        assert record['confidence'] == pytest.approx(confidence)


@pytest.mark.slow
def test_calibrating_on_images_of_the_index_never_lets_a_query_vote_for_itself(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=4)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index')
    calibrations = {}
    for name, flags in (('plain', []), ('leave_one_out', ['--exclude_self'])):
        assert search('calibrate', '--index', index, '--queries', catalogue, '-k', 3, '--max_false_match', 0,
                      '--out', tmp_path / f'{name}.json', *flags) == 0
        calibrations[name] = json.loads((tmp_path / f'{name}.json').read_text())
    plain, leave_one_out = calibrations['plain'], calibrations['leave_one_out']
    assert plain['queries_in_index'] == 12 and plain['exclude_self']
    assert {key: value for key, value in plain.items() if key != 'time'} == \
        {key: value for key, value in leave_one_out.items() if key != 'time'}
    # What a leave-one-out kNN gives, computed here from the neighbours of each image but itself.
    found = query(index, catalogue, tmp_path / 'others.json', '-k', 3, '--exclude_self')['queries']
    votes = [knn.vote([n['label'] for n in record['neighbours']], [n['similarity'] for n in record['neighbours']])
             for record in found]
    expected = knn.choose_threshold([a for a, _ in votes], [c for _, c in votes],
                                    [record['query_label'] for record in found], 0)
    assert plain['threshold'] == pytest.approx(expected['threshold']) if expected['threshold'] else \
        plain['threshold'] is None
    assert plain['threshold'] is None or plain['threshold'] < 0.9999, 'no query found itself at similarity 1'
    # A new image of a catalogue class is answered, not "unknown" for want of a perfect match.
    new = write_images(tmp_path / 'new' / 'apple', 1, COLOURS['apple'], seed=42)[0]
    (record,) = query(index, new, tmp_path / 'new.json', '--classify')['queries']
    answer, confidence = knn.vote([n['label'] for n in record['neighbours']],
                                  [n['similarity'] for n in record['neighbours']])
    assert record['prediction'] == knn.thresholded(answer, confidence, plain['threshold'])


@pytest.mark.slow
def test_classify_keeps_the_calibrated_k_and_search_parameters(checkpoints, tmp_path, capsys):
    catalogue = write_catalogue(tmp_path / 'catalogue', per_class=4)
    labelled = write_catalogue(tmp_path / 'labelled', per_class=2, classes=('apple', 'sky'), seed=30)
    index = build(checkpoints['main'], catalogue, tmp_path / 'index', '--index_type', 'ivf', '--nlist', 2)
    assert search('calibrate', '--index', index, '--queries', labelled, '-k', 3, '--nprobe', 1) == 0
    calibration = SearchIndex.load(str(index)).metadata['calibration']
    assert calibration['k'] == 3 and calibration['search_parameters'] == {'nprobe': 1}
    own = query(index, labelled, tmp_path / 'own.json', '--classify', '--threshold', 0.5)['summary']
    assert own['k'] == 3 and own['threshold'] == 0.5, 'a threshold of one\'s own keeps the calibrated k'
    assert own['search_parameters'] == {'nprobe': 1}
    capsys.readouterr()
    calibrated = query(index, labelled, tmp_path / 'calibrated.json', '--classify', '--nprobe', 2, '-k', 4)['summary']
    assert calibrated['k'] == 4 and calibrated['search_parameters'] == {'nprobe': 2}
    warned = [line.split(' WARNING ')[-1] for line in capsys.readouterr().out.splitlines() if 'calibrated with' in line]
    assert warned == ['the threshold was calibrated with -k 3, not 4; nprobe 1, not 2: its false-match rate may '
                      'not hold']
    plain = query(index, labelled, tmp_path / 'plain.json')['summary']
    assert plain['k'] == 10 and plain['search_parameters'] == {'nprobe': 64}, 'a plain query: the index\'s own'


def test_vote_is_the_majority_with_ties_to_the_higher_similarity():
    assert knn.vote(['a', 'b', 'a'], [0.9, 0.8, 0.7]) == ('a', 0.9)
    assert knn.vote(['b', 'a', 'a'], [0.9, 0.8, 0.7]) == ('a', 0.8), 'two votes beat one nearer'
    assert knn.vote(['b', 'a'], [0.9, 0.8]) == ('b', 0.9), 'a tie: the higher similarity sum'
    assert knn.vote([None, 'c', None], [0.99, 0.5, 0.4]) == ('c', 0.5), 'unlabelled neighbours do not vote'
    answer, confidence = knn.vote([None], [0.9])
    assert answer is None and np.isnan(confidence)
    assert knn.thresholded('a', 0.5, 0.6) is None and knn.thresholded('a', 0.6, 0.6) == 'a'


def test_the_threshold_is_the_lowest_that_keeps_the_false_match_rate():
    # Ten queries: six right answers, four wrong ones (two of classes the catalogue lacks), by confidence.
    answers = ['a', 'a', 'b', 'x', 'b', 'a', 'y', 'b', 'z', 'a']
    truths = ['a', 'a', 'b', 'b', 'b', 'a', 'new', 'b', 'new', 'c']
    confidences = [0.95, 0.9, 0.88, 0.86, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5]
    chosen = knn.choose_threshold(answers, confidences, truths, 0.1)
    # One wrong answer (0.86) is allowed, the second most confident (0.7) must go: just above it, not at 0.75.
    assert chosen['threshold'] == np.nextafter(0.7, 1) and chosen['rejected_confidence'] == 0.7
    assert chosen['false_match_rate'] == 0.1 and chosen['correct_rate'] == 0.5 and chosen['unknown_rate'] == 0.4
    assert knn.thresholded('b', 0.7000001, chosen['threshold']) == 'b', 'a query more confident than 0.7 answers'
    strict = knn.choose_threshold(answers, confidences, truths, 0.0)
    assert strict['threshold'] == np.nextafter(0.86, 1) and strict['correct_rate'] == 0.3
    assert strict['false_match_rate'] == 0
    lenient = knn.choose_threshold(answers, confidences, truths, 0.4)
    assert lenient['threshold'] is None and lenient['rejected_confidence'] is None, 'four wrong of ten are allowed'
    assert lenient['correct_rate'] == 0.6 and lenient['unknown_rate'] == 0


def test_the_threshold_on_hand_made_confidences():
    # The case: a wrong answer at 0.50, right ones at 0.90 and 0.95: a same-class query at 0.6 is answered.
    chosen = knn.choose_threshold(['x', 'a', 'a'], [0.5, 0.9, 0.95], ['a', 'a', 'a'], 0.0)
    assert 0.5 < chosen['threshold'] < 0.5000001 and knn.thresholded('a', 0.6, chosen['threshold']) == 'a'
    assert chosen['correct_rate'] == pytest.approx(2 / 3) and not chosen['rejects_all']
    # No false match: no threshold is needed, and a new query of low confidence is still answered.
    none_wrong = knn.choose_threshold(['a', 'b'], [0.9, 0.3], ['a', 'b'], 0.0)
    assert none_wrong['threshold'] is None and none_wrong['correct_rate'] == 1
    assert knn.thresholded('a', 0.1, none_wrong['threshold']) == 'a'
    # All false: every answer is rejected.
    all_wrong = knn.choose_threshold(['b'] * 3, [0.9, 0.8, 0.7], ['a'] * 3, 0.0)
    assert all_wrong['rejects_all'] and all_wrong['threshold'] == np.nextafter(0.9, 1)
    assert all_wrong['unknown_rate'] == 1 and all_wrong['false_match_rate'] == 0
    # A right and a wrong answer tied at 0.8: the tie is rejected whole, the 0.9 answer stays.
    tie = knn.choose_threshold(['a', 'x', 'a'], [0.9, 0.8, 0.8], ['a', 'a', 'a'], 0.0)
    assert tie['threshold'] == np.nextafter(0.8, 1) and tie['correct_rate'] == pytest.approx(1 / 3)
    # Two wrong answers tied at 0.8 where one is allowed: both go (at 0.8 both would be answered).
    tied_wrong = knn.choose_threshold(['x', 'y', 'a'], [0.8, 0.8, 0.9], ['a', 'a', 'a'], 1 / 3)
    assert tied_wrong['threshold'] == np.nextafter(0.8, 1) and tied_wrong['false_match_rate'] == 0
    # Queries without a labelled neighbour (no answer, nan confidence) are unknown and never false.
    unanswered = knn.choose_threshold([None, 'a'], [float('nan'), 0.4], ['a', 'a'], 0.0)
    assert unanswered['threshold'] is None and unanswered['unknown_rate'] == 0.5


def test_the_threshold_is_the_lowest_of_every_candidate_on_random_confidences():
    """Against a brute force over every threshold that can matter: each confidence and the float just above it,
    and none (-inf)."""
    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(1, 12))
        truths = list(rng.choice(['a', 'b', 'c'], n))
        answers = [str(rng.choice(['a', 'b', 'c'])) if rng.random() > 0.1 else None for _ in range(n)]
        confidences = np.round(rng.random(n), 1)  # one decimal: many ties
        confidences[[answer is None for answer in answers]] = np.nan
        target = float(rng.choice([0.0, 0.1, 0.25, 0.5, 1 / 3]))
        finite = confidences[np.isfinite(confidences)]
        candidates = sorted({-np.inf, *finite, *np.nextafter(finite, np.inf)})
        feasible = [t for t in candidates if knn.rates(answers, confidences, truths, t)['false_match'] <= target]
        chosen = knn.choose_threshold(answers, confidences, truths, target)
        assert (-np.inf if chosen['threshold'] is None else chosen['threshold']) == feasible[0], case
        assert chosen == {**chosen, **{f'{name}_rate': value for name, value in
                                       knn.rates(answers, confidences, truths, chosen['threshold']).items()}}
