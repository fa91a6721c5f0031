"""The input as its own embedding: the test split's metrics before any training, written as a run folder that
Result_Evaluations.py tables next to the trained runs (Sample_Runs/digits_seeds.sh makes its baseline row so).

    python Input_Baseline.py --dataset digits --save_path Training_Results/digits_seeds \
        --group digits_raw_pixels

Takes main.py's flags (dataset defaults included). The embedding of an image is the network input itself: the test
image after the evaluation transform and the input normalisation, flattened. Its metrics come from the evaluation
that scores every epoch of a run (evaluation.evaluator.Evaluator), in the dataset's protocol (leave-one-out, or
query/gallery); the run folder's summary.json holds them as epoch 0 of a run of 0 training epochs.
"""
import logging
import sys
import time

import torch

import datasets
import parameters
from evaluation.evaluator import Evaluator
from plumbing.errors import exit_code
from plumbing.runtime import select_device
from reporting.logs import epoch_line, setup_logging
from run_folder.checkpoint import plain_config
from run_folder.folder import new_run_folder
from run_folder.record import describe_run
from run_folder.summary import RunSummary

logger = logging.getLogger('input_baseline')
ARCH = 'input_pixels'
"""The `arch` of the baseline's configuration: no network, the pixels themselves."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = parameters.parse_args(argv, parameters.build_parser(prog='Input_Baseline.py'))
    setup_logging()
    data = datasets.select(opt)
    evaluator = Evaluator(datasets.test_parts(data), batch_size=opt.bs, workers=opt.kernels,
                          device=select_device(opt.gpu))
    started = time.perf_counter()
    metrics, embedded, _ = evaluator.evaluate(torch.nn.Flatten(), opt.evaluation_metrics, use_gpu=opt.evaluate_on_gpu,
                                              seed=opt.seed)
    entry = {'epoch': 0, **metrics, 'eval_time_s': time.perf_counter() - started}
    session = describe_run('Input_Baseline.py', argv, opt.applied_defaults,
                           datasets.resolve_root(opt.dataset, opt.source_path), data)
    summary = RunSummary(opt.storage_metrics, config={**plain_config(opt), 'arch': ARCH, 'n_epochs': 0},
                         sessions=[session])
    summary.add_epoch(entry)
    folder = new_run_folder(opt.save_path, opt.dataset, opt.savename or opt.group or ARCH)
    summary.save(folder)
    logger.info('%s: %s (pixel embeddings of %s)', folder, epoch_line(entry),
                ', '.join(f'{len(features)} {part} images, {features.shape[1]}-dimensional'
                          for part, (features, _) in embedded.items()))
    return 0


if __name__ == '__main__':
    sys.exit(exit_code(main))
