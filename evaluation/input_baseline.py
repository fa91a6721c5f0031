"""The input as its own embedding: the test split's metrics before any training, written as a run folder that
Result_Evaluations.py tables next to the trained runs (Sample_Runs/digits_seeds.sh makes its baseline row so).

    python -m evaluation.input_baseline --dataset digits --save_path Training_Results/digits_seeds \
        --group digits_raw_pixels

Takes main.py's flags (dataset defaults included). The embedding of an image is the network input itself: the test
image after the evaluation transform and the input normalisation, flattened. Its metrics come from the code that
evaluates every epoch of a run (evaluation.extract_embeddings, evaluation.compute_metrics); the run folder's
summary.json holds them as epoch 0 of a run of 0 training epochs.
"""
import logging
import sys
import time

import torch

import datasets
import evaluation
import parameters
from utilities.checkpoint import plain_config
from utilities.errors import exit_code
from utilities.logs import epoch_line, setup_logging
from utilities.run_folder import new_run_folder
from utilities.run_record import describe_run
from utilities.runtime import select_device
from utilities.summary import RunSummary

logger = logging.getLogger('input_baseline')
ARCH = 'input_pixels'
"""The `arch` of the baseline's configuration: no network, the pixels themselves."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = parameters.parse_args(argv, parameters.build_parser(prog='python -m evaluation.input_baseline'))
    setup_logging()
    data = datasets.select(opt)
    device = select_device(opt.gpu)
    loader = torch.utils.data.DataLoader(data['testing'], batch_size=opt.bs, num_workers=opt.kernels)
    started = time.perf_counter()
    features, labels = evaluation.extract_embeddings(torch.nn.Flatten(), loader, device)
    metrics = evaluation.compute_metrics(features, labels, opt.evaluation_metrics, use_gpu=opt.evaluate_on_gpu,
                                         seed=opt.seed)
    entry = {'epoch': 0, **metrics, 'eval_time_s': time.perf_counter() - started}
    session = describe_run('-m evaluation.input_baseline', argv, opt.applied_defaults,
                           datasets.resolve_root(opt.dataset, opt.source_path), data)
    summary = RunSummary(opt.storage_metrics, config={**plain_config(opt), 'arch': ARCH, 'n_epochs': 0},
                         sessions=[session])
    summary.add_epoch(entry)
    folder = new_run_folder(opt.save_path, opt.dataset, opt.savename or opt.group or ARCH)
    summary.save(folder)
    logger.info('%s: %s (%d-dimensional pixel embeddings of %d test images)', folder, epoch_line(entry),
                features.shape[1], len(features))
    return 0


if __name__ == '__main__':
    sys.exit(exit_code(main))
