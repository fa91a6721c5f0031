"""Training curves of a run as a PNG."""
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history, metric_names, folder):
    """Loss and every test metric against the epoch, written to <folder>/curves.png."""
    epochs = [entry['epoch'] for entry in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ('loss', 'loss_rank', 'loss_kd'):
        loss_axis.plot(epochs, [entry[key] for entry in history], label=key)
    for name in metric_names:
        evaluated = [entry for entry in history if name in entry]  # --evaluate_every skips epochs
        metric_axis.plot([entry['epoch'] for entry in evaluated], [entry[name] for entry in evaluated],
                         marker='.', label=name)
    for axis, title in ((loss_axis, 'training loss'), (metric_axis, 'test metrics')):
        axis.set_xlabel('epoch')
        axis.set_title(title)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = os.path.join(folder, 'curves.png')
    temporary = os.path.join(folder, '.curves.tmp.png')
    figure.savefig(temporary, dpi=90)
    plt.close(figure)
    os.replace(temporary, path)
