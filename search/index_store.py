"""A search index on disk: a faiss index of L2-normalised embeddings, and what each of its rows is, in one folder.

    OUT/metadata.json   the record of the index: format, the embedding settings, the checkpoint (path, sha256,
                        config), the faiss index type and its search parameters, the number of rows, the names of
                        the two files below, the kNN threshold where one was calibrated, the history of writes
    OUT/index-G.faiss   the faiss index (faiss.read_index reads it): row i is item i; inner product metric
    OUT/items-G.csv     id,path,label,split of every row (label and split empty where unknown)

G, the generation, grows by one with every write. A write puts the new index and items files beside the old ones,
then replaces metadata.json (atomically) to name them, then removes the old ones: a write stopped at any point leaves
the previous index whole, and one process at a time writes (OUT/run.lock).
"""
import contextlib
import csv
import json
import logging
import math
import os
import time

import faiss
import numpy as np

from plumbing.errors import UserError
from plumbing.files import atomic_write_json, atomic_write_with
from run_folder.lock import claim_run_folder

logger = logging.getLogger(__name__)

FORMAT = 'obd_sd-search-index-1'
METADATA = 'metadata.json'
INDEX_TYPES = ('flat', 'ivf', 'hnsw')
DEFAULT_NPROBE = 64
DEFAULT_EF_SEARCH = 64
DEFAULT_HNSW_M = 32
ADD_CHUNK = 65536
"""Rows handed to faiss at a time."""
PADDING = -1
"""The id faiss gives where it finds fewer than k neighbours."""


def default_nlist(count):
    """IVF lists for `count` vectors: about 4 sqrt(count), at most count / 39 (faiss wants 39 training points a
    list), at least 1."""
    return max(1, min(round(4 * math.sqrt(count)), count // 39))


def factory_string(index_type, count, nlist=None, hnsw_m=DEFAULT_HNSW_M):
    """The faiss index_factory string of --index_type: flat (exact), ivf, hnsw, or a factory string as it is."""
    if index_type == 'flat':
        return 'Flat'
    if index_type == 'ivf':
        return f'IVF{nlist or default_nlist(count)},Flat'
    if index_type == 'hnsw':
        return f'HNSW{hnsw_m},Flat'
    return index_type


def new_faiss_index(factory, dim):
    """faiss.index_factory(dim, factory) with the inner-product metric; a one-line error for a string faiss
    rejects."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].split(':')[-1].strip()
        raise UserError(f'--index_type {factory!r}: faiss cannot build it ({reason}); use flat, ivf, hnsw or a '
                        f'faiss index_factory string such as IVF1024,Flat') from None


def search_parameters_of(index):
    """{'nprobe': n} for an IVF index, {'efSearch': n} for an HNSW one, {} for an exact one: the defaults."""
    if faiss.try_extract_index_ivf(index) is not None:
        return {'nprobe': DEFAULT_NPROBE}
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        return {'efSearch': DEFAULT_EF_SEARCH}
    return {}


def describe(index_type):
    return {'flat': 'exact', 'ivf': 'approximate (IVF)', 'hnsw': 'approximate (HNSW)'}.get(index_type,
                                                                                           'faiss factory')


class SearchIndex:
    """An index folder in memory: the faiss `index`, parallel `paths`, `labels`, `splits` of its rows, and
    `metadata` (see the module docstring)."""

    def __init__(self, folder, index, paths, labels, splits, metadata):
        self.folder = folder
        self.index = index
        self.paths, self.labels, self.splits = list(paths), list(labels), list(splits)
        self.metadata = metadata
        self._row_of = None

    @classmethod
    def new(cls, folder, index_type, dim, count, embedding, checkpoint, nlist=None, hnsw_m=DEFAULT_HNSW_M):
        """An empty index for about `count` vectors of `dim` dimensions made with `embedding` settings by
        `checkpoint` ({'path', 'sha256', 'config'})."""
        factory = factory_string(index_type, count, nlist, hnsw_m)
        index = new_faiss_index(factory, dim)
        metadata = {'format': FORMAT, 'generation': 0, 'count': 0, 'index_file': None, 'items_file': None,
                    'index': {'type': index_type if index_type in INDEX_TYPES else 'factory', 'factory': factory,
                              'metric': 'inner product of L2-normalised embeddings (cosine similarity)',
                              'search_parameters': search_parameters_of(index)},
                    'embedding': dict(embedding), 'checkpoint': dict(checkpoint), 'calibration': None,
                    'history': []}
        return cls(folder, index, [], [], [], metadata)

    @classmethod
    def load(cls, folder):
        """The index in `folder`, checked: a one-line error where it is missing, foreign or inconsistent."""
        path = os.path.join(folder, METADATA)
        if not os.path.isfile(path):
            what = 'does not exist' if not os.path.exists(folder) else f'has no {METADATA}'
            raise UserError(f'--index {folder} {what}; make an index with Search_Index.py build first')
        metadata = read_json(path)
        if not isinstance(metadata, dict) or metadata.get('format') != FORMAT:
            raise UserError(f'{path} is not the record of a search index ({FORMAT}); pass a folder that '
                            f'Search_Index.py build wrote')
        index_path = os.path.join(folder, metadata['index_file'])
        items_path = os.path.join(folder, metadata['items_file'])
        for needed in (index_path, items_path):
            if not os.path.isfile(needed):
                raise UserError(f'{folder} lacks {os.path.basename(needed)}, which its {METADATA} names; the folder '
                                f'was changed by hand: build the index again')
        try:
            index = faiss.read_index(index_path)
        except RuntimeError:
            raise UserError(f'{index_path} is damaged (faiss cannot read it); build the index again') from None
        paths, labels, splits = read_items(items_path)
        count, dim = metadata['count'], metadata['embedding']['embed_dim']
        if not index.ntotal == len(paths) == count or index.d != dim:
            raise UserError(f'{folder} is inconsistent: {index.ntotal} vectors of {index.d} dimensions, {len(paths)} '
                            f'items, its {METADATA} says {count} of {dim}; build the index again')
        return cls(folder, index, paths, labels, splits, metadata)

    def __len__(self):
        return len(self.paths)

    @property
    def embed_dim(self):
        return self.metadata['embedding']['embed_dim']

    def row_of(self, path):
        """The row of the image at `path` (absolute), or None."""
        if self._row_of is None:
            self._row_of = {p: row for row, p in enumerate(self.paths)}
        return self._row_of.get(path)

    def labelled(self):
        return any(label is not None for label in self.labels)

    def needs_training(self):
        return not self.index.is_trained

    def train(self, features):
        self.index.train(np.ascontiguousarray(features, dtype=np.float32))

    def add(self, features, paths, labels, splits):
        """Append rows: `features` (n x D, L2-normalised) of the images `paths` with their labels and splits."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        for start in range(0, len(features), ADD_CHUNK):
            self.index.add(features[start:start + ADD_CHUNK])
        self.paths += list(paths)
        self.labels += list(labels)
        self.splits += list(splits)
        self._row_of = None

    def set_search_parameters(self, **values):
        """Set nprobe (IVF) or efSearch (HNSW) for the searches that follow; None leaves the stored default."""
        parameters = dict(self.metadata['index']['search_parameters'])
        for name, value in values.items():
            if value is None:
                continue
            if name not in parameters:
                flag = {'nprobe': '--nprobe', 'efSearch': '--ef_search'}[name]
                raise UserError(f'{flag} is for {"IVF" if name == "nprobe" else "HNSW"} indexes; {self.folder} is '
                                f'{self.metadata["index"]["factory"]}: drop {flag}')
            if value < 1:
                raise UserError(f'{name} must be at least 1, got {value}')
            parameters[name] = int(value)
        space = faiss.ParameterSpace()
        for name, value in parameters.items():
            space.set_index_parameter(self.index, name, value)
        return parameters

    def search(self, features, k, exclude_rows=None):
        """(similarities, rows), both len(features) x min(k, len(self)), best first, ties in row order; rows of
        PADDING (similarity -inf) where fewer were found. `exclude_rows` (one row or -1 per query) is left out
        of that query's neighbours (its own image)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        exclude = None if exclude_rows is None else np.asarray(exclude_rows, dtype=np.int64)
        excluding = exclude is not None and bool((exclude >= 0).any())
        k = min(k, len(self))
        if k < 1 or not len(features):
            return np.zeros((len(features), 0), np.float32), np.zeros((len(features), 0), np.int64)
        similarities, rows = self.index.search(features, min(k + excluding, len(self)))
        if excluding:
            own = (rows == exclude[:, None]) & (exclude[:, None] >= 0)
            similarities[own], rows[own] = -np.inf, PADDING
        similarities[rows == PADDING] = -np.inf
        # Best first; among equal similarities the earlier row, so that duplicates come in a fixed order.
        order = np.lexsort((np.where(rows == PADDING, np.iinfo(np.int64).max, rows), -similarities), axis=-1)
        similarities = np.take_along_axis(similarities, order, axis=1)[:, :k]
        rows = np.take_along_axis(rows, order, axis=1)[:, :k]
        return similarities, rows

    def save(self, command, **record):
        """Write the index as its next generation (see the module docstring), inside `writing(folder)`;
        `command` and `record` go into the history."""
        previous = read_json(os.path.join(self.folder, METADATA)) if os.path.isfile(
            os.path.join(self.folder, METADATA)) else None
        generation = max(self.metadata['generation'], previous.get('generation', 0) if isinstance(previous, dict)
                         else 0) + 1
        index_file, items_file = f'index-{generation}.faiss', f'items-{generation}.csv'
        atomic_write_with(os.path.join(self.folder, index_file), lambda path: faiss.write_index(self.index, path))
        atomic_write_with(os.path.join(self.folder, items_file),
                          lambda path: write_items(path, self.paths, self.labels, self.splits))
        history = self.metadata['history'] + [{'command': command, 'time': time.strftime('%Y-%m-%d %H:%M:%S'),
                                               **record, 'count': len(self)}]
        self.metadata.update(generation=generation, count=len(self), index_file=index_file, items_file=items_file,
                             history=history)
        atomic_write_json(os.path.join(self.folder, METADATA), self.metadata)
        for name in os.listdir(self.folder):  # earlier generations, and files of writes that stopped half-way
            if (name.startswith(('index-', 'items-')) and name.endswith(('.faiss', '.csv'))
                    and name not in (index_file, items_file)):
                os.remove(os.path.join(self.folder, name))

    def save_metadata(self):
        """Rewrite metadata.json alone (e.g. a calibration), the index files unchanged; inside `writing(folder)`."""
        atomic_write_json(os.path.join(self.folder, METADATA), self.metadata)


@contextlib.contextmanager
def writing(folder):
    """Hold OUT/run.lock while a command writes the index folder `folder` (created where missing; removed again
    where it stays empty), after removing the temporary files that a write killed half-way left there."""
    created = not os.path.exists(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UserError(f'cannot create --index {folder} ({error.strerror})') from None
    lock = claim_run_folder(folder, in_use_hint='two processes must not write one index: wait for the other to '
                                                'end, or stop it')
    try:
        yield
    finally:
        lock.release()
        if created and not os.listdir(folder):  # a first build that failed leaves no empty folder behind
            os.rmdir(folder)


def read_json(path):
    try:
        with open(path, encoding='utf-8') as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        raise UserError(f'cannot read {path} ({error}); build the index again') from None


def write_items(path, paths, labels, splits):
    with open(path, 'w', encoding='utf-8', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['id', 'path', 'label', 'split'])
        for row, (image, label, split) in enumerate(zip(paths, labels, splits)):
            writer.writerow([row, image, '' if label is None else label, '' if split is None else split])


def read_items(path):
    """(paths, labels, splits) of an items-G.csv file; None where a label or split is empty."""
    paths, labels, splits = [], [], []
    with open(path, encoding='utf-8', newline='') as stream:
        reader = csv.reader(stream)
        next(reader, None)
        for _, image, label, split in reader:
            paths.append(image)
            labels.append(label or None)
            splits.append(split or None)
    return paths, labels, splits
