"""Pictures of a test embedding: a retrieval grid (queries and their nearest neighbours) and a t-SNE map."""
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from datasets.image_dataset import UNREADABLE_IMAGE_ERRORS, load_rgb
from plumbing.files import atomic_write_bytes
from plumbing.lazy import lazy_module
from reporting.plots import plt, save_figure

sklearn_manifold = lazy_module('sklearn.manifold')

SAME_CLASS = (0, 170, 0)
OTHER_CLASS = (215, 0, 0)
QUERY_FRAME = (40, 40, 40)
UNKNOWN_CLASS = (120, 120, 120)
BACKGROUND = (255, 255, 255)
QUERY_SEED = 0  # the same queries in every run on a dataset, so runs can be compared side by side
TSNE_MAX_POINTS = 3000


def pick_queries(labels, n_queries, seed=QUERY_SEED):
    """Indices of `n_queries` test samples, drawn with `seed`: one per class while classes last, then more."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    _, first_of_class = np.unique(labels[order], return_index=True)
    firsts = order[np.sort(first_of_class)]
    rest = order[~np.isin(order, firsts)]
    return np.concatenate([firsts, rest])[:n_queries]


def nearest_neighbours(features, queries, k, gallery=None):
    """(Q x k) indices of each query's k most similar other samples (inner product of L2-normalised rows); with
    `gallery` (M x D), of its k most similar gallery rows."""
    def normalised(rows):
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    candidates = normalised(features if gallery is None else gallery)
    similarities = normalised(features)[queries] @ candidates.T
    if gallery is None:
        similarities[np.arange(len(queries)), queries] = -np.inf
    k = min(k, len(candidates) - (1 if gallery is None else 0))
    top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(similarities, top, axis=1), axis=1, kind='stable')
    return np.take_along_axis(top, order, axis=1)


def tile_of(path, size):
    """The image at `path` centre-cropped to a square and resized (the eval transform's geometry); grey when
    unreadable."""
    try:
        return ImageOps.fit(load_rgb(path), (size, size), Image.Resampling.BICUBIC)
    except UNREADABLE_IMAGE_ERRORS:
        return Image.new('RGB', (size, size), (128, 128, 128))


def retrieval_grid(features, labels, image_paths, class_names=None, n_queries=10, k=6, tile=96, seed=QUERY_SEED,
                   gallery=None):
    """A PIL image: one row per query (dark frame) followed by its k nearest neighbours, framed green when they
    share the query's class and red otherwise. The neighbours are other test images, or, with `gallery` =
    (features, labels, image paths) in the same labelling, gallery images."""
    features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels)
    if len(image_paths) != len(features):
        raise ValueError(f'{len(image_paths)} image paths for {len(features)} embeddings')
    queries = pick_queries(labels, n_queries, seed)
    if gallery is None:
        found_features, found_labels, found_paths, found_in = None, labels, image_paths, 'test'
    else:
        found_features, found_labels, found_paths = np.asarray(gallery[0], dtype=np.float32), gallery[1], gallery[2]
        found_in = 'gallery'
    neighbours = nearest_neighbours(features, queries, k, gallery=found_features)
    name = (lambda label: class_names[label]) if class_names is not None else str
    rows = [(image_paths[query], name(int(labels[query])),
             [(found_paths[index], name(int(found_labels[index])), bool(found_labels[index] == labels[query]))
              for index in found])
            for query, found in zip(queries, neighbours, strict=True)]
    return neighbour_grid(rows, f'query, then its {neighbours.shape[1]} nearest {found_in} images: green = same '
                                f'class, red = other class', tile)


def neighbour_grid(rows, title, tile=96):
    """A PIL image of `rows` [(query path, caption, [(neighbour path, caption, same class: True, False or None
    where unknown)])]: one row per query (dark frame), its neighbours framed green (same class), red (other class)
    or grey (unknown), each image captioned below; `title` on top."""
    font = ImageFont.load_default(size=max(11, tile // 7))
    frame, gap, caption, header = max(3, tile // 16), tile // 6, tile // 5 + 4, tile // 4 + 6
    cell = tile + 2 * frame
    width = gap + (cell + gap // 2) * (max((len(found) for _, _, found in rows), default=0) + 1) + gap // 2
    height = header + (cell + caption) * len(rows) + gap
    grid = Image.new('RGB', (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    draw.text((gap, 4), title, fill=(0, 0, 0), font=font)
    for row, (query_path, query_caption, found) in enumerate(rows):
        top = header + row * (cell + caption)
        for column, (path, text, same) in enumerate([(query_path, query_caption, None), *found]):
            left = gap + column * (cell + gap // 2) + (gap // 2 if column else 0)
            colour = (QUERY_FRAME if column == 0 else UNKNOWN_CLASS if same is None else
                      SAME_CLASS if same else OTHER_CLASS)
            draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill=colour)
            grid.paste(tile_of(path, tile), (left + frame, top + frame))
            draw.text((left, top + cell + 1), text[:max(4, tile // 7)], fill=(0, 0, 0) if column == 0 else colour,
                      font=font)
    return grid


def save_retrieval_grid(path, features, labels, image_paths, class_names=None, **options):
    """Write retrieval_grid(...) as a PNG at `path` (atomically)."""
    return save_png(path, retrieval_grid(features, labels, image_paths, class_names, **options))


def save_neighbour_grid(path, rows, title, tile=96):
    """Write neighbour_grid(rows, title, tile) as a PNG at `path` (atomically)."""
    return save_png(path, neighbour_grid(rows, title, tile))


def save_png(path, image):
    """Write the PIL `image` as a PNG at `path` atomically. zlib level 3 instead of PIL's 6: the same pixels in half
    the time or less (a grid is a megapixel; main.py writes one whenever the best recall improves), for a file 8-14%
    larger (a grid of photographs; of the tests' generated images)."""
    buffer = io.BytesIO()
    image.save(buffer, format='PNG', compress_level=3)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_test_retrieval_grid(path, embedded, test_parts, **options):
    """save_retrieval_grid of the test embeddings {part: (features, labels)} of the ImageDatasets `test_parts`:
    queries from 'testing' among themselves, or from 'query' with neighbours from 'gallery'."""
    if 'gallery' in test_parts:
        query, gallery = test_parts['query'], test_parts['gallery']
        return save_retrieval_grid(path, *embedded['query'], query.paths, query.class_names,
                                   gallery=(*embedded['gallery'], gallery.paths), **options)
    testing = test_parts['testing']
    return save_retrieval_grid(path, *embedded['testing'], testing.paths, testing.class_names, **options)


def tsne_map(features, labels, path, max_points=TSNE_MAX_POINTS, seed=0, title='t-SNE of the test embeddings'):
    """A 2-D t-SNE (scikit-learn) of at most `max_points` seeded samples, coloured by class, saved at `path`."""
    features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels)
    if len(features) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(features), max_points, replace=False))
        features, labels = features[keep], labels[keep]
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    perplexity = min(30.0, (len(features) - 1) / 3)
    points = sklearn_manifold.TSNE(n_components=2, perplexity=perplexity, init='pca',
                                   random_state=seed).fit_transform(features)
    classes = np.unique(labels)
    figure, axis = plt.subplots(figsize=(7, 7))
    colours = plt.get_cmap('tab10' if len(classes) <= 10 else 'tab20' if len(classes) <= 20 else 'turbo')
    for rank, label in enumerate(classes):
        chosen = labels == label
        colour = colours(rank if len(classes) <= 20 else rank / max(len(classes) - 1, 1))
        axis.scatter(points[chosen, 0], points[chosen, 1], s=8, color=colour, label=str(label))
    if len(classes) <= 20:
        axis.legend(title='class', fontsize=7, markerscale=2, loc='best')
    axis.set_title(f'{title} ({len(features)} points, {len(classes)} classes)')
    axis.set_xticks([])
    axis.set_yticks([])
    save_figure(figure, path)
    return path
