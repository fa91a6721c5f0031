"""A search index on disk: a faiss index of L2-normalised embeddings, and what each of its rows is, in one folder.

    OUT/metadata.json   the record of the index: format, the embedding settings, the checkpoint (path, sha256,
                        config), the faiss index type and its search parameters, the number of rows, the names of
                        the two files below, the kNN threshold where one was calibrated, the history of writes
    OUT/index-G.faiss   the faiss index (faiss.read_index reads it): row i is item i; inner product metric
    OUT/items-G.csv     id,path,label,split of every row (label and split empty where unknown)

G, the generation, grows with every write. One process at a time writes (OUT/run.lock); readers take no lock. A
write first names the files it is about to make in metadata.json (`pending_files`), puts them beside the old ones,
then replaces metadata.json (atomically) to name them, keeping the previous generation's files for readers still
reading them (`kept_files`), and removes the files that the previous metadata.json kept or left pending. So a write
stopped at any point leaves the previous index whole and its files named; a reader opens the two files of the
generation that metadata.json names and reads that generation whole, also while a writer works (where two writes
end between its reading metadata.json and opening the files, it reads metadata.json once more). Nothing in the
folder is ever removed unless metadata.json names it (or it is the temporary file of an interrupted write,
plumbing.files.TEMPORARY_NAME): a user's own files beside the index stay as they are.
"""
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import time

import numpy as np

from plumbing.errors import UserError
from plumbing.files import TEMPORARY_NAME, atomic_write_bytes, atomic_write_json, atomic_write_with
from plumbing.lazy import lazy_module
from run_folder.lock import LOCK_FILE, claim_run_folder
from run_folder.saved_flags import EVALUATION_SETTINGS

faiss = lazy_module('faiss')

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
FILE_NAMES = re.compile(r'^(index-[0-9]+\.faiss|items-[0-9]+\.csv)$')
"""The names of the files a write makes: metadata.json names only these, all inside the folder."""
PATH_ENCODING = {'encoding': 'utf-8', 'errors': 'surrogateescape'}
"""How items-G.csv stores paths: UTF-8, and a file name that is not UTF-8 (caf\\xe9.jpg on Linux) byte for byte."""
REQUIRED = {'generation': int, 'count': int, 'index_file': str, 'items_file': str, 'index': dict, 'embedding': dict,
            'checkpoint': dict, 'history': list}
"""metadata.json's entries and their types (besides `format`)."""
REQUIRED_INSIDE = {'index': ('factory', 'type', 'search_parameters'), 'embedding': EVALUATION_SETTINGS,
                   'checkpoint': ('path', 'sha256')}


class DamagedIndex(UserError):
    """An index folder whose metadata.json or files cannot be used as they are; build --overwrite replaces it."""


class UnfinishedIndex(UserError):
    """An index folder whose first build stopped before its end: no index yet; a build may go ahead."""


class Vanished(Exception):
    """A file that metadata.json named was gone when it was opened (a writer removed it meanwhile, or a hand)."""


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
        """The index in `folder`, checked: a one-line error where it is missing, foreign or inconsistent. Readers
        take no lock: where the generation metadata.json names was removed before its files were opened (two writes
        ended meanwhile), metadata.json is read once more."""
        metadata = read_metadata(folder)
        try:
            return cls.read_generation(folder, metadata)
        except Vanished as gone:
            again = read_metadata(folder)
            if again.get('generation') == metadata.get('generation'):
                raise DamagedIndex(f'{folder} lacks {gone}, which its {METADATA} names; the folder was changed by '
                                   f'hand: {REBUILD}') from None
        try:
            return cls.read_generation(folder, again)
        except Vanished:
            raise UserError(f'{folder} changed twice while it was read (other processes are writing it); try '
                            f'again') from None

    @classmethod
    def read_generation(cls, folder, metadata):
        """The index of the generation `metadata` names; Vanished where one of its files is gone."""
        index_path = os.path.join(folder, metadata['index_file'])
        items_path = os.path.join(folder, metadata['items_file'])
        with opened(index_path) as index_stream, opened(items_path) as items_stream:  # both open: removal is harmless
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(index_stream.read))
            except RuntimeError:
                raise DamagedIndex(f'{index_path} is damaged (faiss cannot read it); {REBUILD}') from None
            paths, labels, splits = read_items(items_stream, items_path)
        count, dim = metadata['count'], metadata['embedding']['embed_dim']
        if not index.ntotal == len(paths) == count or index.d != dim:
            raise DamagedIndex(f'{folder} is inconsistent: {index.ntotal} vectors of {index.d} dimensions, '
                               f'{len(paths)} items, its {METADATA} says {count} of {dim}; {REBUILD}')
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
        path = os.path.join(self.folder, METADATA)
        before = read_bytes(path)
        previous, named = earlier_record(before)
        generation = max(self.metadata['generation'], previous['generation'] if previous else 0) + 1
        while any(os.path.lexists(os.path.join(self.folder, name)) for name in generation_files(generation)):
            generation += 1  # a name taken (by a user's file, or by a write that stopped): never overwrite it
        index_file, items_file = generation_files(generation)
        announced = dict(previous or {'format': FORMAT, 'generation': 0, 'count': 0, 'index_file': None,
                                      'items_file': None})
        announced['pending_files'] = sorted(set(named['pending']) | {index_file, items_file})
        atomic_write_json(path, announced)
        try:
            atomic_write_with(os.path.join(self.folder, index_file),
                              lambda target: faiss.write_index(self.index, target))
            atomic_write_with(os.path.join(self.folder, items_file),
                              lambda target: write_items(target, self.paths, self.labels, self.splits))
            history = self.metadata['history'] + [{'command': command, 'time': time.strftime('%Y-%m-%d %H:%M:%S'),
                                                   **record, 'count': len(self)}]
            metadata = {name: value for name, value in self.metadata.items() if name != 'pending_files'}
            metadata.update(generation=generation, count=len(self), index_file=index_file, items_file=items_file,
                            kept_files=named['current'], history=history)
            atomic_write_json(path, metadata)
        except BaseException:  # the files of this write go, and metadata.json is as it was (where it can be written)
            for name in (index_file, items_file):
                remove_file(self.folder, name)
            with contextlib.suppress(OSError, UserError):
                if before is None:
                    remove_file(self.folder, METADATA)
                else:
                    atomic_write_bytes(path, before)
            raise
        self.metadata = metadata
        for name in sorted(set(named['removable']) - {index_file, items_file} - set(named['current'])):
            remove_file(self.folder, name)
        if before is not None and previous is None:  # a damaged record replaced: what it may have named stays
            left = sorted(name for name in os.listdir(self.folder) if FILE_NAMES.match(name)
                          and name not in (index_file, items_file, *named['removable']))
            if left:
                logger.warning('left in %s: %s, which the damaged %s did not name (remove them where they are not '
                               'yours)', self.folder, ', '.join(left), METADATA)

    def save_metadata(self):
        """Rewrite metadata.json alone (e.g. a calibration), the index files unchanged; inside `writing(folder)`."""
        atomic_write_json(os.path.join(self.folder, METADATA), self.metadata)


REBUILD = 'build it again with Search_Index.py build --overwrite'


def generation_files(generation):
    return f'index-{generation}.faiss', f'items-{generation}.csv'


def read_bytes(path):
    try:
        with open(path, 'rb') as stream:
            return stream.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f'cannot read {path} ({error.strerror})') from None


def remove_file(folder, name):
    try:
        os.remove(os.path.join(folder, name))
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def opened(path):
    """`path` opened for reading; Vanished where it is gone."""
    try:
        stream = open(path, 'rb')
    except FileNotFoundError:
        raise Vanished(os.path.basename(path)) from None
    except OSError as error:
        raise UserError(f'cannot read {path} ({error.strerror})') from None
    with stream:
        yield stream


def parsed_json(data, path):
    try:
        return json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as error:
        raise DamagedIndex(f'{path} is damaged (not JSON: {error}); {REBUILD}') from None


def check_metadata(metadata, path):
    """A DamagedIndex naming the first entry of metadata.json that is missing or wrong; a UserError where it is no
    index's record at all."""
    if not isinstance(metadata, dict) or metadata.get('format') != FORMAT:
        raise UserError(f'{path} is not the record of a search index ({FORMAT}); pass a folder that '
                        f'Search_Index.py build wrote')
    if metadata.get('index_file') is None and 'pending_files' in metadata:
        raise UnfinishedIndex(f'{os.path.dirname(path)} holds no finished index: a build into it stopped before its '
                              f'end; run the build again')
    for name, kind in REQUIRED.items():
        if not isinstance(metadata.get(name), kind) or (kind is int and isinstance(metadata[name], bool)):
            what = 'lacks' if name not in metadata else 'has a wrong'
            raise DamagedIndex(f'{path} {what} "{name}" (expected {kind.__name__}); {REBUILD}')
    for name, inside in REQUIRED_INSIDE.items():
        missing = [key for key in inside if key not in metadata[name]]
        if missing:
            raise DamagedIndex(f'{path} lacks "{name}": "{missing[0]}"; {REBUILD}')
    for name in ('index_file', 'items_file'):
        if not FILE_NAMES.match(metadata[name]):
            raise DamagedIndex(f'{path} names {metadata[name]!r} as its {name}: not a file of this folder; {REBUILD}')


def read_metadata(folder):
    """The checked metadata.json of the index folder `folder`; a one-line error where it is missing or damaged."""
    path = os.path.join(folder, METADATA)
    data = read_bytes(path)
    if data is None:
        what = 'does not exist' if not os.path.exists(folder) else f'has no {METADATA}'
        raise UserError(f'--index {folder} {what}; make an index with Search_Index.py build first')
    metadata = parsed_json(data, path)
    check_metadata(metadata, path)
    return metadata


def earlier_record(data):
    """(the valid metadata of the index a write replaces, or None where there is none or it is damaged; the files
    its record names {'current', 'pending', 'removable'}). Only names a write makes count, so a damaged record can
    name nothing outside the folder; one that cannot be read names nothing."""
    named = {'current': [], 'pending': [], 'removable': []}
    try:
        metadata = json.loads(data.decode('utf-8')) if data is not None else None
    except (UnicodeDecodeError, ValueError):
        return None, named
    if not isinstance(metadata, dict):
        return None, named

    def names(*values):
        flat = [value for entry in values for value in (entry if isinstance(entry, list) else [entry])]
        return sorted({value for value in flat if isinstance(value, str) and FILE_NAMES.match(value)})

    current = names(metadata.get('index_file'), metadata.get('items_file'))
    named['pending'] = names(metadata.get('pending_files'))
    try:
        check_metadata(metadata, METADATA)
    except UserError:  # damaged, or a build that stopped: every file it names may go
        named['removable'] = names(current, named['pending'], metadata.get('kept_files'))
        return None, named
    named['current'] = current
    named['removable'] = names(named['pending'], metadata.get('kept_files'))
    return metadata, named


def contents(folder):
    """What the folder `folder` holds, for a build: ('empty', None) (also where it does not exist, or holds only a
    lock or the temporary files of a write that was killed), ('index', None), ('unfinished', None) (a build that
    stopped), ('damaged', why) or ('other', the names of its files)."""
    try:
        names = sorted(name for name in os.listdir(folder) if name != LOCK_FILE and not TEMPORARY_NAME.match(name))
    except FileNotFoundError:
        return 'empty', None
    except NotADirectoryError:
        raise UserError(f'--index {folder} is a file; pass a folder (new, or one that holds an index)') from None
    if METADATA in names:
        try:
            read_metadata(folder)
        except UnfinishedIndex:
            return 'unfinished', None
        except UserError as error:  # damaged, or foreign
            return 'damaged', str(error)
        return 'index', None
    return ('other', names) if names else ('empty', None)


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


def write_items(path, paths, labels, splits):
    with open(path, 'w', newline='', **PATH_ENCODING) as stream:
        writer = csv.writer(stream)
        writer.writerow(ITEMS_HEADER)
        for row, (image, label, split) in enumerate(zip(paths, labels, splits)):
            writer.writerow([row, image, '' if label is None else label, '' if split is None else split])


ITEMS_HEADER = ['id', 'path', 'label', 'split']


def read_items(stream, path):
    """(paths, labels, splits) of an items-G.csv file open as the binary `stream`; None where a label or split is
    empty. A DamagedIndex where a row is cut off or out of order."""
    paths, labels, splits = [], [], []
    text = io.TextIOWrapper(stream, newline='', **PATH_ENCODING)
    try:
        reader = csv.reader(text)
        if next(reader, None) != ITEMS_HEADER:
            raise DamagedIndex(f'{path} is damaged (its header is not {",".join(ITEMS_HEADER)}); {REBUILD}')
        for row in reader:
            if len(row) != 4 or row[0] != str(len(paths)):
                raise DamagedIndex(f'{path} is damaged (line {reader.line_num} is not row {len(paths)}: id,path,label,'
                                   f'split; the file was cut off or edited); {REBUILD}')
            paths.append(row[1])
            labels.append(row[2] or None)
            splits.append(row[3] or None)
    except csv.Error as error:
        raise DamagedIndex(f'{path} is damaged ({error}); {REBUILD}') from None
    finally:
        text.detach()
    return paths, labels, splits
