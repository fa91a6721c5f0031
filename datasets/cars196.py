"""CARS196: `images/<class folder>/*.jpg`; classes in sorted folder order, first half (98) train."""
from datasets.image_folder import images_folder, list_class_folders, split_classes_in_half


def load_splits(root):
    """{'training': Split, 'testing': Split} of the CARS196 folder `root`."""
    return split_classes_in_half(list_class_folders(images_folder(root)), 'cars196')
