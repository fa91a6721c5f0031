"""Reading class-per-folder image trees and cutting them into splits."""
import os
from typing import NamedTuple

from plumbing.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')


class Split(NamedTuple):
    """One split of a dataset: `samples` are (path, label) with labels 0..C-1, named by `class_names`;
    `class_groups`, where the dataset has them, gives each class's super-class (SOP's categories);
    `origins`, where a list file names the images, gives {path: 'FILE, line N'} for messages about them.
    A query or gallery split shares its labelling with the other, so a class may have no image in it."""
    samples: list
    class_names: list
    class_groups: list = None
    origins: dict = None


def images_folder(root):
    """`root/images`, or a UserError when it is missing."""
    folder = os.path.join(root, 'images')
    if not os.path.isdir(folder):
        raise UserError(f'{root} has no "images" folder; point --source at the dataset folder')
    return folder


def list_images(folder):
    """The image files directly in `folder`, sorted by name (hidden files skipped)."""
    names = sorted(name for name in os.listdir(folder)
                   if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(folder, name) for name in names]


def class_folders(parent):
    """The class folders in `parent`, sorted by name, each as (folder name, image paths); a UserError naming a
    class folder without images."""
    names = sorted(name for name in os.listdir(parent)
                   if not name.startswith('.') and os.path.isdir(os.path.join(parent, name)))
    classes = []
    for name in names:
        paths = list_images(os.path.join(parent, name))
        if not paths:
            raise UserError(f'class folder {os.path.join(parent, name)} has no images; '
                            f'add images ({", ".join(IMAGE_EXTENSIONS)}) or remove the folder')
        classes.append((name, paths))
    return classes


def list_class_folders(images_dir):
    """The class folders in `images_dir`, sorted by name, each as (folder name, image paths); at least two."""
    classes = class_folders(images_dir)
    if not classes:
        raise UserError(f'{images_dir} has no class folders; expected one folder of images per class')
    if len(classes) < 2:
        raise UserError(f'{images_dir} has only one class folder; metric learning needs at least 4 '
                        '(2 for training, 2 for testing)')
    return classes


def labelled_split(samples, class_names, where, split_name, class_groups=None, origins=None):
    """A Split of `samples` [(path, class name)] labelled by the position of their class in `class_names`, the
    split's labelling (a query or gallery split shares it with the other, so a class may have no image there);
    a UserError naming `where` when fewer than two classes have images."""
    present = {name for _, name in samples}
    if len(present) < 2:
        raise UserError(f'{where}: the {split_name} split has {len(present)} class(es), but at least 2 are needed')
    label_of = {name: label for label, name in enumerate(class_names)}
    return Split([(path, label_of[name]) for path, name in samples], list(class_names), class_groups, origins)


def make_split(classes, dataset_name, split_name):
    """A Split from (class name, image paths) pairs, labelled in the given order."""
    return labelled_split([(path, name) for name, paths in classes for path in paths], [name for name, _ in classes],
                          dataset_name, split_name)


def split_classes_in_half(classes, dataset_name):
    """{'training': first half of the classes, 'testing': the rest} (an odd one goes to testing)."""
    half = len(classes) // 2
    return {'training': make_split(classes[:half], dataset_name, 'training'),
            'testing': make_split(classes[half:], dataset_name, 'testing')}
