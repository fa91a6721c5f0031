"""Building, growing and querying an index: the catalogue embedded in batches, the index filled in chunks, queries
searched as they are embedded, and the results as records, CSV, JSON and a picture.

Memory: a build streams the embeddings into a temporary file beside the index (removed afterwards) and hands them to
faiss in chunks, so it needs the memory of the index, not of the images; an IVF index is trained on a seeded sample
of those embeddings first.
"""
import csv
import io
import json
import logging
import os
import tempfile
import time
from typing import NamedTuple

import numpy as np

from plumbing.errors import UserError
from plumbing.files import atomic_write_bytes
from plumbing.lazy import lazy_module
from reporting.figures import save_neighbour_grid
from search import index_store, knn
from search.index_store import PADDING

faiss = lazy_module('faiss')

logger = logging.getLogger(__name__)

TRAINING_POINTS_PER_LIST = 64
TRAINING_SAMPLE_OTHERS = 100_000
"""Training vectors for a faiss factory index that is neither flat nor IVF (e.g. PQ)."""
SAMPLE_SEED = 0


def training_size(index):
    ivf = faiss.try_extract_index_ivf(index)
    return TRAINING_POINTS_PER_LIST * ivf.nlist if ivf is not None else TRAINING_SAMPLE_OTHERS


def index_catalogue(search_index, embedder, catalogue, *, batch_size, workers):
    """Embed every image of `catalogue` and append the readable ones to `search_index` (training it first where it
    needs training). Returns {'images', 'indexed', 'left_out' [(path, reason)], 'embed_s', 'index_s'}."""
    count, dim = len(catalogue), embedder.embed_dim
    left_out = []
    handle, temporary = tempfile.mkstemp(dir=search_index.folder, prefix='.embeddings.npy.', suffix='.tmp')
    os.close(handle)
    try:
        vectors = np.lib.format.open_memmap(temporary, mode='w+', dtype=np.float32, shape=(count, dim))
        readable = np.zeros(count, dtype=bool)
        start = time.perf_counter()
        for positions, features in embedder.embed_batches(catalogue.paths, batch_size=batch_size, workers=workers,
                                                          left_out=left_out, description='Embedding catalogue'):
            vectors[positions] = features
            readable[positions] = True
        embed_s = time.perf_counter() - start
        if left_out:
            logger.warning('left out %d unreadable images of %s', len(left_out), catalogue.source)
        rows = np.flatnonzero(readable)
        if not len(rows):
            raise UserError(f'none of the {count} images of {catalogue.source} can be read; see the warnings above')
        start = time.perf_counter()
        if search_index.needs_training():
            train(search_index, vectors, rows)
        for first in range(0, len(rows), index_store.ADD_CHUNK):
            chunk = rows[first:first + index_store.ADD_CHUNK]
            search_index.add(vectors[chunk], [catalogue.paths[i] for i in chunk],
                             [catalogue.labels[i] for i in chunk], [catalogue.splits[i] for i in chunk])
        index_s = time.perf_counter() - start
        del vectors
    finally:
        os.remove(temporary)
    return {'images': count, 'indexed': int(len(rows)), 'left_out': left_out, 'embed_s': embed_s, 'index_s': index_s}


def train(search_index, vectors, rows):
    """Train the faiss index on a seeded sample of the embeddings `vectors[rows]`."""
    size = min(len(rows), training_size(search_index.index))
    sample = np.sort(np.random.default_rng(SAMPLE_SEED).choice(rows, size, replace=False))
    try:
        search_index.train(vectors[sample])
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].split(':')[-1].strip()
        raise UserError(f'faiss cannot train {search_index.metadata["index"]["factory"]} on {size} images '
                        f'({reason}); use fewer lists (--nlist) or --index_type flat for a small catalogue') from None


class Neighbours(NamedTuple):
    """One query's result: its path and label, the rows of its neighbours in the index and their similarities,
    best first (padding dropped)."""
    path: str
    label: object
    rows: np.ndarray
    similarities: np.ndarray


def query_catalogue(search_index, embedder, queries, *, k, batch_size, workers, exclude_self=False):
    """The Neighbours of every readable image of the Catalogue `queries`, in its order, searched batch by batch as
    they are embedded; with `exclude_self` a query that is itself in the index is not its own neighbour. Returns
    (results, {'queries', 'answered', 'left_out', 'embed_s', 'search_s', 'seconds'})."""
    results, left_out, search_s = [], [], 0.0
    start = time.perf_counter()
    for positions, features in embedder.embed_batches(queries.paths, batch_size=batch_size, workers=workers,
                                                      left_out=left_out, description='Embedding queries'):
        exclude = None
        if exclude_self:
            found = (search_index.row_of(queries.paths[position]) for position in positions)
            exclude = np.array([PADDING if row is None else row for row in found], dtype=np.int64)
        searched = time.perf_counter()
        similarities, rows = search_index.search(features, k, exclude)
        search_s += time.perf_counter() - searched
        for position, found_similarities, found_rows in zip(positions, similarities, rows):
            kept = found_rows != PADDING
            results.append(Neighbours(queries.paths[position], queries.labels[position], found_rows[kept],
                                      found_similarities[kept]))
    seconds = time.perf_counter() - start
    if left_out:
        logger.warning('left out %d unreadable query images of %s', len(left_out), queries.source)
    if not results:
        raise UserError(f'none of the {len(queries)} query images of {queries.source} can be read; see the warnings '
                        f'above')
    return results, {'queries': len(queries), 'answered': len(results), 'left_out': left_out,
                     'embed_s': seconds - search_s, 'search_s': search_s, 'seconds': seconds}


def classify(search_index, results, threshold=None):
    """[(answer, confidence, thresholded answer)] of knn.vote on each result's neighbours."""
    answers = []
    for result in results:
        answer, confidence = knn.vote([search_index.labels[row] for row in result.rows], result.similarities)
        answers.append((answer, confidence, knn.thresholded(answer, confidence, threshold)))
    return answers


def records(search_index, results, answers=None):
    """JSON-ready dicts, one a query: query, query_label, [prediction, confidence,] neighbours [{rank, path,
    label, similarity, id}]."""
    out = []
    for position, result in enumerate(results):
        record = {'query': result.path, 'query_label': result.label}
        if answers is not None:
            _, confidence, answer = answers[position]
            record.update(prediction=answer, confidence=None if not np.isfinite(confidence) else float(confidence))
        record['neighbours'] = [{'rank': rank + 1, 'path': search_index.paths[row], 'label': search_index.labels[row],
                                 'similarity': float(similarity), 'id': int(row)}
                                for rank, (row, similarity) in enumerate(zip(result.rows, result.similarities))]
        out.append(record)
    return out


CSV_COLUMNS = ('query', 'query_label', 'rank', 'neighbour', 'neighbour_label', 'similarity', 'id')


def csv_text(query_records):
    """One row per (query, neighbour): CSV_COLUMNS, then prediction and confidence where classified."""
    classified = bool(query_records) and 'prediction' in query_records[0]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(CSV_COLUMNS + (('prediction', 'confidence') if classified else ()))
    for record in query_records:
        extra = ()
        if classified:
            extra = (blank(record['prediction']), '' if record['confidence'] is None else f'{record["confidence"]:.6f}')
        for neighbour in record['neighbours']:
            writer.writerow((record['query'], blank(record['query_label']), neighbour['rank'], neighbour['path'],
                             blank(neighbour['label']), f'{neighbour["similarity"]:.6f}', neighbour['id']) + extra)
    return buffer.getvalue()


def blank(value):
    return '' if value is None else value


def check_output(path, flag, extensions):
    """A UserError, before any work, where `path` has none of `extensions` or its folder does not exist."""
    if path is None:
        return
    if not path.lower().endswith(extensions):
        raise UserError(f'{flag} {path}: the name must end in {" or ".join(extensions)}')
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f'{flag} {path}: the folder {folder} does not exist; create it first')


def write_records(path, query_records, summary=None):
    """The records as CSV (.csv) or JSON (.json: {'summary': ..., 'queries': [...]}), written atomically. A file
    name that is not UTF-8 (caf\\xe9.jpg on Linux) keeps its bytes in the CSV file (as `ls` prints it); the JSON
    file is then written in ASCII, the name escaped (\\udce9), which Python's json and os read back as that file."""
    if path.lower().endswith('.csv'):
        atomic_write_bytes(path, csv_text(query_records).encode('utf-8', 'surrogateescape'))
        return
    document = {'summary': summary or {}, 'queries': query_records}
    try:
        data = json.dumps(document, indent=1, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError:
        data = json.dumps(document, indent=1).encode('ascii')
    atomic_write_bytes(path, data + b'\n')


def picture_rows(query_records):
    """neighbour_grid rows of the records: neighbours captioned with similarity and label, framed green / red
    where both labels are known and equal / differ, grey where one is unknown."""
    rows = []
    for record in query_records:
        caption = record['query_label'] or os.path.basename(record['query'])
        if 'prediction' in record:
            caption = f'{record["prediction"] or "unknown"} ({blank(record["query_label"]) or "?"})'
        found = [(neighbour['path'], f'{neighbour["similarity"]:.2f} {blank(neighbour["label"])}'.strip(),
                  None if neighbour['label'] is None or record['query_label'] is None
                  else neighbour['label'] == record['query_label'])
                 for neighbour in record['neighbours']]
        rows.append((record['query'], caption, found))
    return rows


def save_picture(path, query_records, tile=96):
    """The first queries and their neighbours as a PNG grid at `path` (like a run's retrieval.png)."""
    k = max((len(record['neighbours']) for record in query_records), default=0)
    title = f'query and its {k} nearest: similarity, label; green same label, red other, grey unknown'
    try:
        return save_neighbour_grid(path, picture_rows(query_records), title, tile)
    except OSError as error:
        raise UserError(f'cannot write --picture {path} ({error.strerror})') from None
