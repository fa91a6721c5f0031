"""The images of a catalogue or of a set of queries: one image, a folder, or a CSV list, with labels where known.

Accepted, in this order:
- an image file: that one image, label unknown;
- a CSV file (or a folder holding `split.csv`): a header with a `path` column and optional `label` and `split`
  columns, as the `folder` dataset's split.csv; relative paths are relative to the CSV's folder, absolute paths are
  taken as they are; an empty label is an unknown one;
- a folder with `train/`, `test/`, `query/` or `gallery/` class folders (the `folder` dataset's layout): every image,
  labelled by its class folder, its split the folder's name;
- any other folder: every image below it (sorted, at any depth), labelled by the first folder below the root it lies
  in (`DIR/<class>/...`); images directly in the folder have no label. `folder_labels=False` labels none.

A row or file that cannot be used stops with a one-line error naming it; an unreadable image is not detected here
but where it is decoded (search.embedding), and left out there.
"""
import csv
import os
from typing import NamedTuple

from datasets.folder import SPLIT_FILE, SPLIT_NAMES
from datasets.image_folder import IMAGE_EXTENSIONS, class_folders
from plumbing.errors import UserError


class Catalogue(NamedTuple):
    """Parallel lists: absolute image `paths`, `labels` (str, or None where unknown) and `splits` (str or None);
    `origins` {path: 'FILE, row N'} where a list named the images, and `source`, what was read."""
    paths: list
    labels: list
    splits: list
    origins: dict
    source: str

    def __len__(self):
        return len(self.paths)

    def labelled(self):
        return any(label is not None for label in self.labels)

    def select(self, keep):
        """The catalogue of the positions `keep` (in that order)."""
        return Catalogue([self.paths[i] for i in keep], [self.labels[i] for i in keep],
                         [self.splits[i] for i in keep], self.origins, self.source)


def is_image_file(path):
    return os.path.basename(path).lower().endswith(IMAGE_EXTENSIONS)


def read_catalogue(source, splits=None, folder_labels=True, flag='--images'):
    """The Catalogue of `source` (an image, a CSV list or a folder: see the module docstring); with `splits`, only
    the images of those splits. A UserError (one line, naming `flag`) where it holds no image."""
    source = os.path.expanduser(source)
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, SPLIT_FILE)):
            catalogue = read_list(os.path.join(source, SPLIT_FILE))
        elif any(os.path.isdir(os.path.join(source, name)) for name in SPLIT_NAMES):
            catalogue = read_split_folders(source)
        else:
            catalogue = read_folder_tree(source, folder_labels)
    elif os.path.isfile(source):
        if source.lower().endswith('.csv'):
            catalogue = read_list(source)
        elif is_image_file(source):
            catalogue = Catalogue([os.path.abspath(source)], [None], [None], {}, source)
        else:
            raise UserError(f'{flag} {source} is neither an image ({", ".join(IMAGE_EXTENSIONS)}), nor a .csv list, '
                            f'nor a folder')
    else:
        raise UserError(f'{flag} {source} does not exist; pass an image, a folder of images or a .csv list')
    if splits:
        catalogue = only_splits(catalogue, splits, flag)
    if not len(catalogue):
        raise UserError(f'{flag} {source} holds no images ({", ".join(IMAGE_EXTENSIONS)}); add images or pass '
                        f'another folder or list')
    return catalogue


def only_splits(catalogue, splits, flag):
    present = {split for split in catalogue.splits if split is not None}
    if not present:
        raise UserError(f'{flag} {catalogue.source} has no splits (no split column, no train/test/query/gallery '
                        f'folders), so --split {" ".join(splits)} selects nothing; drop --split')
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        raise UserError(f'--split {unknown[0]}: expected some of {", ".join(SPLIT_NAMES)}')
    keep = [i for i, split in enumerate(catalogue.splits) if split in splits]
    if not keep:
        raise UserError(f'{flag} {catalogue.source} has no image in the split(s) {", ".join(splits)}; it has '
                        f'{", ".join(sorted(present))}')
    return catalogue.select(keep)


def read_split_folders(root):
    """The images of the `folder` dataset's class folders DIR/<split>/<class>/*, labelled by class."""
    paths, labels, splits = [], [], []
    for split in SPLIT_NAMES:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            continue
        for name, images in class_folders(split_dir):
            paths += [os.path.abspath(path) for path in images]
            labels += [name] * len(images)
            splits += [split] * len(images)
    return Catalogue(paths, labels, splits, {}, root)


def read_folder_tree(root, folder_labels=True):
    """Every image below `root`, sorted by path; labelled by its first folder below `root` (`folder_labels`)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith('.'))
        relative = os.path.relpath(folder, root)
        label = None if relative == os.curdir or not folder_labels else relative.split(os.sep)[0]
        found += [(os.path.abspath(os.path.join(folder, name)), label) for name in sorted(files)
                  if not name.startswith('.') and is_image_file(name)]
    found.sort()
    return Catalogue([path for path, _ in found], [label for _, label in found], [None] * len(found), {}, root)


def read_list(path):
    """The images a CSV list names: column `path` (relative to the list's folder, or absolute), optional `label`
    (empty: unknown) and `split`; a one-line error naming the row of a bad one."""
    root = os.path.dirname(os.path.abspath(path))
    paths, labels, splits, origins, first_row = [], [], [], {}, {}
    try:
        with open(path, encoding='utf-8-sig', newline='') as stream:
            reader = csv.DictReader(stream)
            columns = reader.fieldnames or []
            if 'path' not in columns:
                raise UserError(f'{path}, row 1: the header has no "path" column; expected "path" and optionally '
                                f'"label" and "split", e.g. "path,label"')
            for row in reader:
                where = f'{path}, row {reader.line_num}'
                relative = (row.get('path') or '').strip()
                label = (row.get('label') or '').strip() or None
                split = (row.get('split') or '').strip() or None
                if not relative:
                    raise UserError(f'{where}: empty path')
                if split is not None and split not in SPLIT_NAMES:
                    raise UserError(f'{where}: unknown split {split!r}; expected one of {", ".join(SPLIT_NAMES)}')
                image_path = os.path.abspath(os.path.join(root, os.path.expanduser(relative)))
                if image_path in first_row:
                    raise UserError(f'{where}: {relative} is listed again (first in row {first_row[image_path]})')
                first_row[image_path] = reader.line_num
                origins[image_path] = where
                paths.append(image_path)
                labels.append(label)
                splits.append(split)
    except UnicodeDecodeError as error:
        raise UserError(f'{path} is not UTF-8 text ({error.reason}); save it as UTF-8') from None
    except csv.Error as error:
        raise UserError(f'{path} is not a readable CSV file ({error})') from None
    return Catalogue(paths, labels, splits, origins, path)
