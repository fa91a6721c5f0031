"""CUB200-2011: `images/NNN.Class_Name/*.jpg`; classes ordered by NNN, first half train, rest test."""
import os
import re

from datasets.image_folder import images_folder, list_class_folders, split_classes_in_half
from plumbing.errors import UserError

NAME = 'cub200'
DOWNLOAD_PAGE = 'https://www.vision.caltech.edu/datasets/cub_200_2011/'
ROOT_MARKER = 'images'
DEFAULT_METRICS = ('e_recall@1', 'e_recall@2', 'e_recall@4', 'e_recall@8', 'nmi', 'f1', 'mAP@R')
PUBLISHED_SIZES = {'training': (5864, 100), 'testing': (5924, 100)}
"""(images, classes) of each split of the published archive."""

CLASS_FOLDER = re.compile(r'^(\d+)\.(.+)$')


def load_splits(root, dataset_name='cub200'):
    """{'training': Split, 'testing': Split} of the CUB-layout folder `root`; class names without NNN."""
    images_dir = images_folder(root)
    numbered = []
    for folder_name, paths in list_class_folders(images_dir):
        match = CLASS_FOLDER.match(folder_name)
        if match is None:
            raise UserError(f'class folder {os.path.join(images_dir, folder_name)} is not named '
                            '"NNN.Class_Name" as in the CUB200 archive; rename it')
        numbered.append((int(match.group(1)), match.group(2), paths))
    numbered.sort(key=lambda entry: entry[0])
    classes = [(name, paths) for _, name, paths in numbered]
    return split_classes_in_half(classes, dataset_name)
