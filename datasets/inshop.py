"""In-Shop Clothes Retrieval (DeepFashion): `Img/img/{MEN,WOMEN}/<Category>/id_XXXXXXXX/*.jpg`, split by
`Eval/list_eval_partition.txt` into training items and query images ranked against gallery images of other items.

The partition file: line 1 the number of images, line 2 the header `image_name item_id evaluation_status`, then
one whitespace-aligned row per image, its path relative to `Img/` and its status train, query or gallery.
"""
import os

from datasets.image_folder import labelled_split
from plumbing.errors import UserError

NAME = 'inshop'
DOWNLOAD_PAGE = 'https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html'
PARTITION_FILE = os.path.join('Eval', 'list_eval_partition.txt')
ROOT_MARKER = PARTITION_FILE
DEFAULT_METRICS = ('e_recall@1', 'e_recall@10', 'e_recall@20', 'e_recall@30', 'e_recall@40', 'e_recall@50',
                   'mAP@R')
PUBLISHED_SIZES = {'training': (25882, 3997), 'query': (14218, 3985), 'gallery': (12612, 3985)}
HEADER = ['image_name', 'item_id', 'evaluation_status']
SPLIT_OF_STATUS = {'train': 'training', 'query': 'query', 'gallery': 'gallery'}
STATUS_OF_SPLIT = {split: status for status, split in SPLIT_OF_STATUS.items()}


def read_partition(path):
    """[(line number, image name, item id, split)] of the partition file at `path`; UserError naming the line of
    anything that does not fit the format."""
    if not os.path.isfile(path):
        raise UserError(f'{path} is missing; it ships with the In-Shop archive ({DOWNLOAD_PAGE})')
    with open(path, encoding='utf-8') as lines:
        rows = [line.split() for line in lines]
    if not rows or len(rows[0]) != 1 or not rows[0][0].isdigit():
        raise UserError(f'{path}, line 1: expected the number of images')
    if len(rows) < 2 or rows[1] != HEADER:
        raise UserError(f'{path}, line 2: expected the header "{" ".join(HEADER)}"')
    entries, seen = [], {}
    for line_number, fields in enumerate(rows[2:], start=3):
        if not fields:
            continue
        if len(fields) != 3:
            raise UserError(f'{path}, line {line_number}: expected "{" ".join(HEADER)}", got {len(fields)} fields')
        name, item_id, status = fields
        if status not in SPLIT_OF_STATUS:
            raise UserError(f'{path}, line {line_number}: unknown evaluation_status {status!r}; expected one of '
                            f'{", ".join(SPLIT_OF_STATUS)}')
        if name in seen:
            raise UserError(f'{path}, line {line_number}: {name} is listed again (first on line {seen[name]})')
        seen[name] = line_number
        entries.append((line_number, name, item_id, SPLIT_OF_STATUS[status]))
    if int(rows[0][0]) != len(entries):
        raise UserError(f'{path}, line 1: says {int(rows[0][0])} images, but the file lists {len(entries)}; '
                        'the file is damaged or cut short: download it again')
    return entries


def load_splits(root):
    """{'training': Split, 'query': Split, 'gallery': Split} of the In-Shop folder `root`; query and gallery share
    one labelling (item ids in sorted order), training has its own."""
    path = os.path.join(root, PARTITION_FILE)
    by_split = {split: [] for split in SPLIT_OF_STATUS.values()}
    for line_number, name, item, split in read_partition(path):
        by_split[split].append((line_number, os.path.join(root, 'Img', name), item, split))
    training_items = sorted({item for _, _, item, _ in by_split['training']})
    evaluation_items = sorted({item for split in ('query', 'gallery') for _, _, item, _ in by_split[split]})
    items = {'training': training_items, 'query': evaluation_items, 'gallery': evaluation_items}
    return {split: labelled_split([(image_path, item) for _, image_path, item, _ in entries], items[split], path,
                                  STATUS_OF_SPLIT[split],
                                  origins={image_path: f'{path}, line {line}' for line, image_path, _, _ in entries})
            for split, entries in by_split.items()}
