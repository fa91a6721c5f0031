"""The pictures: retrieval grid (queries, neighbours, green/red frames), t-SNE map, training curves."""
import numpy as np
from PIL import Image

from reporting.figures import (OTHER_CLASS, SAME_CLASS, nearest_neighbours, pick_queries, retrieval_grid,
                                save_retrieval_grid, tsne_map)
from reporting.plots import plot_history


def decoded(path):
    return np.asarray(Image.open(path).convert('RGB'))


def has_colour(pixels, colour):
    return bool(np.all(pixels == np.array(colour, dtype=np.uint8), axis=-1).any())


def test_nearest_neighbours_match_a_full_sort():
    features = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    queries = np.array([3, 17, 42])
    normalised = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarities = normalised[queries] @ normalised.T
    similarities[np.arange(3), queries] = -np.inf
    assert np.array_equal(nearest_neighbours(features, queries, 5), np.argsort(-similarities, axis=1)[:, :5])


def test_queries_are_fixed_and_cover_the_classes_first():
    labels = np.repeat(np.arange(5), 20)
    queries = pick_queries(labels, 10)
    assert len(set(queries)) == 10 and np.array_equal(queries, pick_queries(labels, 10))
    assert sorted(labels[queries[:5]]) == [0, 1, 2, 3, 4]


def test_retrieval_grid_frames_same_class_green_and_others_red(make_cub200, tmp_path):
    data = make_cub200(n_classes=6, per_class=4, image_size=24)
    paths = sorted(str(p) for p in data.glob('images/*/*'))
    labels = np.repeat(np.arange(6), 4)
    # Each class's embeddings lie around its own direction: a query's 3 classmates come first, then other classes.
    rng = np.random.default_rng(0)
    features = np.eye(6, 16)[labels] + 0.05 * rng.normal(size=(24, 16))
    path = save_retrieval_grid(tmp_path / 'retrieval.png', features, labels, paths, [f'class {c}' for c in range(6)],
                               n_queries=8, k=5, tile=48)
    pixels = decoded(path)
    assert pixels.shape[0] > 8 * 48 and pixels.shape[1] > 6 * 48
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, 'the images themselves are in the grid'
    # Every row: 3 classmates framed green, then 2 images of other classes framed red.
    green = np.all(pixels == np.array(SAME_CLASS, dtype=np.uint8), axis=-1).sum()
    red = np.all(pixels == np.array(OTHER_CLASS, dtype=np.uint8), axis=-1).sum()
    assert red > 0 and 1.3 < green / red < 1.7
    grid = retrieval_grid(features, labels, paths, [f'class {c}' for c in range(6)], n_queries=8, k=5, tile=48)
    assert np.array_equal(np.asarray(grid), pixels), 'the same queries every time'


def test_tsne_map_is_a_picture_of_every_class(tmp_path):
    labels = np.repeat(np.arange(4), 30)
    features = np.eye(4, 8)[labels] + 0.1 * np.random.default_rng(1).normal(size=(120, 8))
    pixels = decoded(tsne_map(features, labels, tmp_path / 'tsne.png', max_points=100))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    tab10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    assert all(has_colour(pixels, colour) for colour in tab10), 'one colour per class'


def test_curves_give_each_loss_term_a_panel_and_mark_best_epochs(tmp_path):
    history = [{'epoch': e, 'loss': 1.2 - 0.1 * e, 'loss_rank': 1.2 - 0.1 * e, 'loss_kd': 1e-4 * e,
                'e_recall@1': 0.5 + 0.05 * e - 0.02 * e * e, 'nmi': 0.3 + 0.01 * e} for e in range(5)]
    path = plot_history(history, ['e_recall@1', 'nmi'], tmp_path, {'e_recall@1': (0.53, 1), 'nmi': (0.34, 4)})
    pixels = decoded(path)
    assert pixels.shape[1] > 3 * pixels.shape[0], 'four panels side by side'
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_curves_put_the_embedding_space_measures_in_a_panel_of_their_own(tmp_path, monkeypatch):
    """dists@... and rho_spectrum@M (M != 0) have no best and another scale: a panel of their own, only where asked
    for; the spectrum itself (rho_spectrum@0, a list per epoch) is not a curve."""
    from reporting import plots

    figures = []
    monkeypatch.setattr(plots, 'save_figure', lambda figure, path: figures.append(figure) or path)
    history = [{'epoch': e, 'loss': 1.0 - 0.1 * e, 'e_recall@1': 0.5 + 0.05 * e, 'mAP@R': 0.2 + 0.01 * e,
                'dists@intra_over_inter': 0.8 - 0.05 * e, 'rho_spectrum@-1': 0.3 + 0.02 * e,
                'rho_spectrum@0': [0.5, 0.3, 0.2]} for e in range(4)]
    names = ['e_recall@1', 'mAP@R', 'rho_spectrum@0', 'dists@intra_over_inter', 'rho_spectrum@-1']
    plots.plot_history(history, names, tmp_path, {'e_recall@1': (0.65, 3)})
    plots.plot_history(history, ['e_recall@1', 'mAP@R'], tmp_path)
    with_measures, without = figures

    def panels(figure):
        return {axis.get_title(): [line.get_label() for line in axis.get_lines()
                                   if not line.get_label().startswith('_')] for axis in figure.axes}

    assert panels(with_measures) == {
        'loss (total)': [], 'test metrics': ['e_recall@1', 'best e_recall@1: 0.6500 (epoch 3)', 'mAP@R'],
        'embedding space': ['dists@intra_over_inter', 'rho_spectrum@-1']}
    assert list(panels(without)) == ['loss (total)', 'test metrics']
