"""Checks of the splits a dataset's files list, before any image is opened: their sizes against the published
archive, and test classes that also occur in training. Each finding is a warning; the run goes on."""


def split_sizes(splits):
    """{split: (images, classes)} of the Splits `splits`, classes counted where they have images."""
    return {name: (len(split.samples), len({label for _, label in split.samples})) for name, split in splits.items()}


def describe_sizes(sizes):
    return ', '.join(f'{name} {images:,} images of {classes:,} classes' for name, (images, classes) in sizes.items())


def published_size_warning(module, root, splits, modules):
    """A warning naming both sets of counts where `splits` differ from `module.PUBLISHED_SIZES` (None otherwise),
    with the likely cause: another dataset's folder, an incomplete download, or extra files."""
    published = module.PUBLISHED_SIZES
    if not published:
        return None
    found = split_sizes(splits)
    if found == published:
        return None
    lookalike = next((other.NAME for other in modules.values()
                      if other is not module and other.PUBLISHED_SIZES == found), None)
    if lookalike:
        cause = f'these are the counts of {lookalike}: is --source the {lookalike} folder?'
    elif all(found.get(name, (0, 0))[0] <= images for name, (images, _) in published.items()):
        cause = f'an incomplete download or extraction? (the archive: {module.DOWNLOAD_PAGE})'
    else:
        cause = 'extra or other files in the folder?'
    return (f'{module.NAME} at {root}: {describe_sizes(found)}; the published archive has '
            f'{describe_sizes(published)}: {cause} The run goes on with the images found.')


def shared_class_warning(splits):
    """A warning where classes of the evaluation splits also occur in training (None otherwise): DML benchmarks
    test on unseen classes."""
    training = set(splits['training'].class_names)
    evaluated = {name for split in ('testing', 'query', 'gallery') if split in splits
                 for name in {splits[split].class_names[label] for _, label in splits[split].samples}}
    shared = sorted(training & evaluated)
    if not shared:
        return None
    shown = ', '.join(repr(name) for name in shared[:5]) + (', ...' if len(shared) > 5 else '')
    return (f'{len(shared)} of the {len(evaluated)} evaluation classes also occur in training ({shown}): the '
            'metrics then measure seen classes, not the zero-shot retrieval that DML benchmarks report')


def split_warnings(module, root, splits, modules):
    """The warnings about `splits` of `module`'s folder `root`; `modules` are all datasets, for look-alikes."""
    return [warning for warning in (published_size_warning(module, root, splits, modules),
                                    shared_class_warning(splits)) if warning]
