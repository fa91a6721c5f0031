"""Stanford Online Products: `images/<category>_final/*.JPG`, split by `Info_Files/Ebay_{train,test}.txt`."""
import os

from datasets import image_folder
from datasets.image_folder import images_folder
from plumbing.errors import UserError

NAME = 'online_products'
DOWNLOAD_PAGE = 'https://cvgl.stanford.edu/projects/lifted_struct/'
ROOT_MARKER = 'images'
DEFAULT_METRICS = ('e_recall@1', 'e_recall@10', 'e_recall@100', 'e_recall@1000', 'nmi', 'mAP@R')
PUBLISHED_SIZES = {'training': (59551, 11318), 'testing': (60502, 11316)}

SPLIT_FILES = {'training': 'Ebay_train.txt', 'testing': 'Ebay_test.txt'}
HEADER = ['image_id', 'class_id', 'super_class_id', 'path']


def read_split_file(list_path, images_dir):
    """[(image path, class id, super-class id, line number)] from one Ebay_*.txt file (a header, then rows
    `image_id class_id super_class_id path`)."""
    if not os.path.isfile(list_path):
        raise UserError(f'{list_path} is missing; it ships with the Stanford Online Products archive')
    with open(list_path, encoding='utf-8') as lines:
        rows = [line.split() for line in lines]
    if not rows or rows[0] != HEADER:
        raise UserError(f'{list_path} does not start with the header "{" ".join(HEADER)}"')
    entries = []
    for line_number, fields in enumerate(rows[1:], start=2):
        if not fields:
            continue
        if len(fields) != 4 or not (fields[1].isdigit() and fields[2].isdigit()):
            raise UserError(f'{list_path}, line {line_number}: expected "image_id class_id super_class_id path"')
        entries.append((os.path.join(images_dir, fields[3]), int(fields[1]), int(fields[2]), line_number))
    return entries


def labelled_split(entries, list_path, split_name):
    """A Split whose labels number the class ids 0..C-1 in increasing id order; names are the ids, groups
    the super-class ids."""
    super_class_of = {class_id: super_class for _, class_id, super_class, _ in entries}
    class_ids = sorted(super_class_of)
    return image_folder.labelled_split(
        [(path, str(class_id)) for path, class_id, _, _ in entries], [str(class_id) for class_id in class_ids],
        list_path, split_name, class_groups=[super_class_of[class_id] for class_id in class_ids],
        origins={path: f'{list_path}, line {line}' for path, _, _, line in entries})


def load_splits(root):
    """{'training': Split, 'testing': Split} of the SOP folder `root`, as its Info_Files define them."""
    images_dir = images_folder(root)
    splits = {}
    for split_name, file_name in SPLIT_FILES.items():
        list_path = os.path.join(root, 'Info_Files', file_name)
        splits[split_name] = labelled_split(read_split_file(list_path, images_dir), list_path, split_name)
    return splits
