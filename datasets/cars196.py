"""CARS196: `images/<class folder>/*.jpg`; classes in sorted folder order, first half (98) train."""
from datasets import cub200
from datasets.image_folder import images_folder, list_class_folders, split_classes_in_half

NAME = 'cars196'
DOWNLOAD_PAGE = 'https://ai.stanford.edu/~jkrause/cars/car_dataset.html'
ROOT_MARKER = 'images'
DEFAULT_METRICS = cub200.DEFAULT_METRICS
PUBLISHED_SIZES = {'training': (8054, 98), 'testing': (8131, 98)}


def load_splits(root):
    """{'training': Split, 'testing': Split} of the CARS196 folder `root`."""
    return split_classes_in_half(list_class_folders(images_folder(root)), 'cars196')
