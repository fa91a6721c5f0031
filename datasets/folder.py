"""Your own images (`--dataset folder --source DIR`), in either of two layouts:

- class folders: `DIR/train/<class>/*` with `DIR/test/<class>/*` (leave-one-out evaluation), or with
  `DIR/query/<class>/*` and `DIR/gallery/<class>/*` (query/gallery retrieval);
- a list: `DIR/split.csv` (or --split_file FILE) with a header and the columns path,label,split: `path` relative
  to DIR, `label` any string, `split` one of train, test, query, gallery.

A list takes precedence over class folders. Classes are labelled in sorted name order; query and gallery share one
labelling.
"""
import csv
import os

from datasets import cub200
from datasets.image_folder import class_folders, labelled_split
from plumbing.errors import UserError

NAME = 'folder'
DOWNLOAD_PAGE = None
DEFAULT_METRICS = cub200.DEFAULT_METRICS
PUBLISHED_SIZES = None
OPTIONS = ('split_file',)
SPLIT_FILE = 'split.csv'
COLUMNS = ('path', 'label', 'split')
SPLIT_NAMES = {'train': 'training', 'test': 'testing', 'query': 'query', 'gallery': 'gallery'}


def resolve_root(source_path):
    """--source itself: the folder of the images."""
    if source_path is None:
        raise UserError('--source is required for --dataset folder: the folder holding train/ and test/ (or '
                        f'query/ and gallery/) class folders, or a {SPLIT_FILE}')
    source_path = os.path.expanduser(source_path)
    if not os.path.isdir(source_path):
        raise UserError(f'--source {source_path} is not a folder; pass the folder of your images')
    return source_path


def load_splits(root, split_file=None):
    """{'training', 'testing'} or {'training', 'query', 'gallery'} Splits of the folder `root`."""
    if split_file is None and os.path.isfile(os.path.join(root, SPLIT_FILE)):
        split_file = os.path.join(root, SPLIT_FILE)
    by_split, origins = read_list(split_file, root) if split_file else read_class_folders(root)
    check_split_names(set(by_split), split_file or root)
    return labelled_splits(by_split, origins, split_file or root)


def read_class_folders(root):
    """({split name: {class: [paths]}}, None) from the train/, test/, query/, gallery/ folders of `root`."""
    by_split = {}
    for folder_name, split in SPLIT_NAMES.items():
        split_dir = os.path.join(root, folder_name)
        if not os.path.isdir(split_dir):
            continue
        by_split[split] = dict(class_folders(split_dir))
    if not by_split:
        raise UserError(f'{root} has neither a {SPLIT_FILE} nor train/ and test/ (or query/ and gallery/) class '
                        'folders; see docs/datasets.md, "Your own images"')
    return by_split, None


def read_list(path, root):
    """({split name: {class: [paths]}}, {path: 'FILE, row N'}) from a path,label,split CSV file."""
    if not os.path.isfile(path):
        raise UserError(f'--split_file {path} does not exist')
    by_split, origins, first_row = {}, {}, {}
    try:
        with open(path, encoding='utf-8-sig', newline='') as stream:
            reader = csv.DictReader(stream)
            missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f'{path}, row 1: the header lacks the column(s) {", ".join(missing)}; expected '
                                f'"{",".join(COLUMNS)}"')
            for row in reader:
                row_number = reader.line_num  # the file's line, blank lines counted
                where = f'{path}, row {row_number}'
                relative, label, split = ((row[column] or '').strip() for column in COLUMNS)
                if not relative:
                    raise UserError(f'{where}: empty path')
                if not label:
                    raise UserError(f'{where}: empty label')
                if split not in SPLIT_NAMES:
                    raise UserError(f'{where}: unknown split {split!r}; expected one of {", ".join(SPLIT_NAMES)}')
                inside = os.path.normpath(relative)
                if os.path.isabs(relative) or inside == os.pardir or inside.startswith(os.pardir + os.sep):
                    raise UserError(f'{where}: the path {relative} leaves {root}; paths are relative to that folder')
                image_path = os.path.join(root, inside)
                if image_path in first_row:
                    raise UserError(f'{where}: {relative} is listed again (first in row {first_row[image_path]})')
                first_row[image_path] = row_number
                origins[image_path] = where
                by_split.setdefault(SPLIT_NAMES[split], {}).setdefault(label, []).append(image_path)
    except UnicodeDecodeError as error:
        raise UserError(f'{path} is not UTF-8 text ({error.reason}); save it as UTF-8') from None
    except csv.Error as error:
        raise UserError(f'{path} is not a readable CSV file ({error})') from None
    return by_split, origins


def check_split_names(present, where):
    evaluation = present - {'training'}
    if 'training' not in present:
        raise UserError(f'{where} has no train split; add train images')
    if evaluation not in ({'testing'}, {'query', 'gallery'}):
        raise UserError(f'{where} has the evaluation split(s) {", ".join(sorted(evaluation)) or "none"}; use '
                        'either test, or query and gallery')


def labelled_splits(by_split, origins, where):
    """Splits labelled by sorted class name; query and gallery share one labelling."""
    shared = sorted(set(by_split.get('query', {})) | set(by_split.get('gallery', {})))
    return {split: labelled_split([(path, name) for name in sorted(classes) for path in classes[name]],
                                  shared if split in ('query', 'gallery') else sorted(classes), where, split,
                                  origins=origins)
            for split, classes in by_split.items()}
