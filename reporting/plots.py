"""Figures written with matplotlib: a run's training curves, and a bar chart of a result table."""
import io
import os

import numpy as np

from plumbing.files import atomic_write_bytes
from plumbing.lazy import lazy_module

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
    ({metric: (value, epoch)}, e.g. RunSummary.best_epochs()) marked."""
    epochs = [entry['epoch'] for entry in history]
    terms = [key for key in LOSS_TERMS if any(key in entry for entry in history)]
    figure, axes = plt.subplots(1, len(terms) + 1, figsize=(4 * (len(terms) + 1), 3.8))
    for axis, key in zip(axes, terms):
        axis.plot(epochs, [entry.get(key, float('nan')) for entry in history], marker='.', color='tab:blue')
        axis.set_title(key if key != 'loss' else 'loss (total)')
        axis.ticklabel_format(axis='y', style='sci', scilimits=(-3, 4), useOffset=False)
    metric_axis = axes[-1]
    for name in metric_names:
        evaluated = [entry for entry in history if name in entry]  # --evaluate_every skips epochs
        line, = metric_axis.plot([entry['epoch'] for entry in evaluated], [entry[name] for entry in evaluated],
                                 marker='.', label=name)
        if best and name in best:
            value, epoch = best[name]
            metric_axis.plot([epoch], [value], marker='*', markersize=13, color=line.get_color(), linestyle='none',
                             label=f'best {name}: {value:.4f} (epoch {epoch})')
            metric_axis.axvline(epoch, color=line.get_color(), linestyle=':', alpha=0.7)
    metric_axis.set_title('test metrics')
    metric_axis.legend(fontsize=7)
    for axis in axes:
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_xlabel('epoch')
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, os.path.join(folder, 'curves.png'))


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
