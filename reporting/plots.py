"""Figures written with matplotlib: a run's training curves, and a bar chart of a result table."""
import io
import os

import numpy as np

from plumbing.files import atomic_write_bytes
from plumbing.lazy import lazy_module

evaluation = lazy_module('evaluation')  # it imports torch, which the plots of a result table need not
embedding_space = lazy_module('evaluation.embedding_space')
matplotlib = lazy_module('matplotlib')
ticker = lazy_module('matplotlib.ticker')


def use_agg():
    """matplotlib's Agg backend, chosen before pyplot is imported (here, or by a library that draws with it, as
    Optuna's plots): figures are written to files, with or without a display."""
    matplotlib.use('Agg')


plt = lazy_module('matplotlib.pyplot', before_import=use_agg)

LOSS_TERMS = ('loss', 'loss_rank', 'loss_kd')


def save_figure(figure, path, dpi=90):
    """Write `figure` as a PNG at `path` atomically and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_history(history, metric_names, folder, best=None):
    """<folder>/curves.png: each loss term in its own panel and scale (the distillation term is orders of magnitude
    smaller than the ranking loss), then every test metric, with the best epoch of each entry of `best`
    ({metric: (value, epoch)}, e.g. RunSummary.best_epochs()) marked; the measures of the embedding space
    (dists@..., rho_spectrum@M, M != 0) where asked for, in a panel of their own (they have no best)."""
    epochs = [entry['epoch'] for entry in history]
    terms = [key for key in LOSS_TERMS if any(key in entry for entry in history)]
    scalar = [name for name in metric_names if not any(isinstance(entry.get(name), list) for entry in history)]
    panels = {'test metrics': [name for name in scalar if evaluation.is_score(name)],
              'embedding space': [name for name in scalar if not evaluation.is_score(name)]}
    panels = {title: names for title, names in panels.items() if names or title == 'test metrics'}
    width = len(terms) + len(panels)
    figure, axes = plt.subplots(1, width, figsize=(4 * width, 3.8))
    for axis, key in zip(axes, terms):
        axis.plot(epochs, [entry.get(key, float('nan')) for entry in history], marker='.', color='tab:blue')
        axis.set_title(key if key != 'loss' else 'loss (total)')
        axis.ticklabel_format(axis='y', style='sci', scilimits=(-3, 4), useOffset=False)
    for axis, (title, names) in zip(axes[len(terms):], panels.items()):
        plot_metrics(axis, history, names, best)
        axis.set_title(title)
    for axis in axes:
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_xlabel('epoch')
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, os.path.join(folder, 'curves.png'))


def plot_metrics(axis, history, names, best):
    """A line per metric over the epochs that evaluated it (--evaluate_every skips epochs), its best epoch starred."""
    for name in names:
        evaluated = [entry for entry in history if name in entry]
        line, = axis.plot([entry['epoch'] for entry in evaluated], [entry[name] for entry in evaluated],
                          marker='.', label=name)
        if best and name in best:
            value, epoch = best[name]
            axis.plot([epoch], [value], marker='*', markersize=13, color=line.get_color(), linestyle='none',
                      label=f'best {name}: {value:.4f} (epoch {epoch})')
            axis.axvline(epoch, color=line.get_color(), linestyle=':', alpha=0.7)
    if names:
        axis.legend(fontsize=7)


def plot_spectrum(features, path, title):
    """A PNG at `path` of the normalised singular-value spectrum of `features` (N x D, as the network gave them): the
    D - 1 values that rho_spectrum@M reads, on a log scale, with rho_spectrum@-1, @1 and @2 in the legend."""
    space = embedding_space.EmbeddingSpace(features, np.zeros(len(features)))
    spectrum = np.asarray(space.rho(0))
    figure, axis = plt.subplots(figsize=(6, 4))
    shown = spectrum > 0
    axis.plot(np.arange(1, len(spectrum) + 1)[shown], spectrum[shown], marker='.', color='tab:blue',
              label=', '.join(f'rho_spectrum@{mode} {space.rho(mode):.4g}' for mode in (-1, 1, 2)))
    axis.axhline(1 / max(len(spectrum), 1), color='grey', linestyle=':', label='uniform')
    axis.set_yscale('log')
    axis.set_xlabel('singular value (largest first)')
    axis.set_ylabel('share of the sum')
    axis.set_title(title)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_result_bars(rows, metric_names, path, title):
    """A grouped bar chart: one group per metric, one bar per setting at its mean, error bars of its std.

    rows: [{'setting': name, 'metrics': {metric: {'mean', 'std', 'n'}}}] (values as fractions, drawn as %).
    """
    width = 0.8 / max(len(rows), 1)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(metric_names) * max(1, len(rows) / 2)), 4.5))
    positions = np.arange(len(metric_names))
    for number, row in enumerate(rows):
        stats = [row['metrics'].get(name, {}) for name in metric_names]
        means = [100 * s['mean'] if s.get('n') else np.nan for s in stats]
        stds = [100 * s['std'] if s.get('n', 0) > 1 else 0 for s in stats]
        counts = [s.get('n', 0) for s in stats]
        bars = axis.bar(positions + (number - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
                        label=f'{row["setting"]} ({max(counts)} seeds)')
        for bar, count in zip(bars, counts):
            if count:
                axis.annotate(f'n={count}', (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 2),
                              textcoords='offset points', ha='center', fontsize=6, rotation=90, color='white')
    axis.set_xticks(positions, metric_names)
    axis.set_ylabel('% (mean ± sample std, ddof=1)')
    axis.set_title(title)
    axis.legend(fontsize=7)
    axis.grid(axis='y', alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)
