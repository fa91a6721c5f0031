"""Console and run-folder logging."""
import logging
import os
import sys


def setup_logging(folder=None, quiet=False):
    """Log INFO (WARNING when quiet: the ranks other than 0 of a torchrun run) to stdout and, with a run folder,
    append to <folder>/log.txt."""
    handlers = [logging.StreamHandler(sys.stdout)]
    if folder is not None:
        handlers.append(logging.FileHandler(os.path.join(folder, 'log.txt'), encoding='utf-8'))
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format='%(asctime)s %(levelname)s %(message)s',
                        datefmt='%H:%M:%S', handlers=handlers, force=True)
    # faiss says at INFO which of its CPU builds it loads (8 lines); imported lazily, it says so after this set-up
    logging.getLogger('faiss').setLevel(logging.WARNING)


def epoch_line(entry):
    """'epoch 3 | loss 0.8123 | e_recall@1 0.5120 | ...' for the log."""
    parts = [f'epoch {entry["epoch"]}']
    for key, value in entry.items():
        if key == 'epoch':
            continue
        if isinstance(value, list):  # the spectrum of rho_spectrum@0: in summary.json, metrics.csv and W&B
            parts.append(f'{key} [{len(value)} values]')
        else:
            parts.append(f'{key} {number(value)}' if isinstance(value, float) else f'{key} {value}')
    return ' | '.join(parts)


def number(value):
    """4 decimals; 3 significant digits for small values such as a learning rate of 1e-5 or the raw KL term."""
    return f'{value:.3g}' if 0 < abs(value) < 1e-3 else f'{value:.4f}'

