"""Image transforms for training and evaluation, by augmentation name."""
from torchvision import transforms

from utilities.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ('base', 'adv', 'big', 'red')


def resize_size(image_size):
    """The shorter side images are resized to before cropping: 256 for 224 crops."""
    return round(image_size * 256 / 224)


def make_transform(train, augmentation, image_size):
    """PIL image -> normalised float tensor (3 x S x S), as in the Revisiting-DML framework.

    With s = `image_size` and r = round(s * 256 / 224) (256 for s = 224):
    - 'base': train RandomResizedCrop(s) + HorizontalFlip; eval Resize(r) + CenterCrop(s).
    - 'adv':  'base' plus RandomGrayscale(0.2) and ColorJitter(0.2, 0.2, 0.2, 0.2).
    - 'big':  like 'base' with crops of r instead of s (eval Resize(r) + CenterCrop(r)).
    - 'red':  reduced: train Resize(r) + RandomCrop(s) + HorizontalFlip; eval as 'base'.
    All end with ImageNet mean/std normalisation.
    """
    if augmentation not in AUGMENTATIONS:
        raise UserError(f'unknown --augmentation {augmentation!r}; choose one of {", ".join(AUGMENTATIONS)}')
    resized = resize_size(image_size)
    crop = resized if augmentation == 'big' else image_size
    if not train:
        steps = [transforms.Resize(resized), transforms.CenterCrop(crop)]
    elif augmentation == 'red':
        steps = [transforms.Resize(resized), transforms.RandomCrop(crop), transforms.RandomHorizontalFlip(0.5)]
    elif augmentation == 'adv':
        steps = [transforms.RandomResizedCrop(crop), transforms.RandomGrayscale(0.2),
                 transforms.ColorJitter(0.2, 0.2, 0.2, 0.2), transforms.RandomHorizontalFlip(0.5)]
    else:
        steps = [transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip(0.5)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
