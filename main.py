"""Train an embedding network with a ranking loss plus OBD-SD, evaluating the unseen test classes every epoch.

    python main.py --dataset cub200 --source $datapath/cub200 --PSD --OBDP --kd_lambda 1000 --diffusion_w 0.3
    python main.py --dataset digits --PSD --OBDP      # built-in demo, no download
    torchrun --nproc_per_node=4 main.py ...           # DistributedDataParallel; --bs stays the global batch
"""
import json
import logging
import os
import sys
import time

import numpy as np

import architectures
import criteria
import datasampler
import datasets
import evaluation
import parameters
from engine.optimization import build_optimizer, build_scheduler
from engine.teacher import make_teacher, refresh_teacher
from engine.training import (EpochProgress, NonFiniteLoss, check_deterministic_backward, train_one_epoch,
                             training_loader)
from evaluation.evaluator import Evaluator
from plumbing import distributed
from plumbing.errors import UserError, exit_code
from plumbing.files import FileWriteError
from plumbing.runtime import seed_everything
from plumbing.stop_signals import StopSignals
from reporting.figures import save_test_retrieval_grid
from reporting.logs import epoch_line, number, setup_logging
from reporting.online_log import OnlineLog, use_wandb_key
from reporting.plots import plot_history, plot_spectrum
from run_folder.checkpoint import plain_config, read_checkpoint, save_checkpoint
from run_folder.embeddings_file import write_embeddings
from run_folder.folder import (LAST_CHECKPOINT, how_to_continue, last_checkpoint_note, new_run_folder,
                               resume_checkpoint)
from run_folder.lock import claim_run_folder
from run_folder.record import applied_defaults_line, describe_run, record_start
from run_folder.resume import TrainingState, distillation_weight_change, loss_math_change, options_for_resume
from run_folder.summary import COLLAPSED, RunSummary

logger = logging.getLogger('main')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = parameters.build_parser(prog='main.py')
    parameters.add_main_flags(parser)
    opt = parameters.parse_args(argv, parser)
    use_wandb_key(opt.wandb_key)
    resumed = None
    if opt.resume:
        resume_path = resume_checkpoint(opt.resume, opt.save_path, opt.dataset, run_name(opt))
        resumed = read_checkpoint(resume_path)
        opt = options_for_resume(resumed, opt, parameters.explicit_flags(parser, argv), resume_path)
    if opt.dry_run:
        return dry_run(opt)

    device = distributed.init(opt.dist_backend, opt.gpu, opt.bs, opt.samples_per_class, opt.dist_timeout)
    setup_logging(quiet=not distributed.is_main())
    seed_everything(opt.seed, opt.deterministic)
    data = datasets.select(opt)
    sampler = datasampler.select(opt, data['training'].labels)
    train_loader = training_loader(data['training'], sampler, opt.kernels, device)
    test_parts = datasets.test_parts(data)
    splits = {'': test_parts, 'val_': {'testing': data['validation']} if data['validation'] is not None else {}}
    evaluators = {prefix: Evaluator(parts, batch_size=opt.bs, workers=opt.kernels, device=device)
                  for prefix, parts in splits.items() if parts}

    model = architectures.select(opt.arch, opt, load_pretrained=resumed is None).to(device)
    if opt.deterministic and device.type == 'cuda':  # on CUDA, ops without a deterministic kernel raise in backward
        check_deterministic_backward(model, device, opt.image_size, amp=opt.amp, channels_last=opt.amp)
    network = distributed.wrap(model, device)  # DDP under torchrun, else the model itself
    teacher = make_teacher(model)
    if opt.compile:
        model.compile()
    criterion = criteria.select(opt.loss, opt, n_classes=data['training'].n_classes).to(device)
    optimizer = build_optimizer(model, criterion, optim=opt.optim, lr=opt.lr, fc_lr=opt.fc_lr, decay=opt.decay,
                                fused=device.type == 'cuda')
    scheduler = build_scheduler(optimizer, milestones=opt.tau, gamma=opt.gamma)
    run = TrainingState(model, teacher, criterion, optimizer, scheduler,
                        RunSummary(opt.storage_metrics, config=plain_config(opt)))
    folder = os.path.dirname(os.path.abspath(resume_path)) if resumed else distributed.on_main(
        new_run_folder, opt.save_path, opt.dataset, run_name(opt))
    lock = claim_run_folder(folder) if distributed.is_main() else None
    setup_logging(folder if distributed.is_main() else None, quiet=not distributed.is_main())
    session = describe_run('main.py', argv, opt.applied_defaults, datasets.resolve_root(opt.dataset, opt.source_path),
                           data)
    if distributed.is_main():
        try:
            record_start(folder, run.summary.config, session)
        except FileWriteError as error:
            lock.release()
            raise write_failed(error, folder) from None
    report_data(data)
    start_epoch, progress = 0, EpochProgress()
    if resumed:
        start_epoch, progress, online_id = run.restore(resumed)
        logger.info('resuming %s at epoch %d, step %d', folder, start_epoch, progress.step)
        for change in (distillation_weight_change(resumed, opt), loss_math_change(resumed, opt)):
            if change and distributed.is_main():
                logger.warning(change)
    run.summary.sessions.append(session)
    online = OnlineLog(opt.log_online and distributed.is_main(), opt.project, opt.group, os.path.basename(folder),
                       run.summary.config, folder, run_id=resumed and online_id,
                       collective_timeout_s=opt.dist_timeout * 60)
    logger.info('run folder %s | %d training images of %d classes | %s on %s | loss %s | batches: %s', folder,
                len(data['training']), data['training'].n_classes, opt.arch, device, criteria.describe(opt.loss, opt),
                datasampler.DRAWS[opt.data_sampler])
    if opt.amp:
        logger.info(evaluation.AMP_NOTE)

    with StopSignals() as stop:
        try:
            for epoch in range(start_epoch, opt.n_epochs):
                sampler.set_epoch(epoch, start_batch=progress.step)
                try:
                    progress = train_one_epoch(network, teacher, criterion, optimizer, train_loader, device, epoch,
                                               progress, stop, opt.skip_nonfinite, amp=opt.amp, channels_last=opt.amp,
                                               clip_grad=opt.clip_grad)
                except NonFiniteLoss as error:
                    raise UserError(f'{error}; {last_checkpoint_note(folder)}; lower --lr, or pass '
                                    f'--skip_nonfinite to skip such batches') from None
                if stop.requested:  # all wait for rank 0 to save: torchrun ends the others when one exits non-zero
                    distributed.on_main(run.save, os.path.join(folder, LAST_CHECKPOINT), epoch, progress, online.run_id)
                    return report_stop(stop, folder)
                rates = {'lr': optimizer.param_groups[0]['lr'], 'kd_weight': criterion.kd_weight(epoch)}
                scheduler.step()
                distributed.broadcast_buffers(model)
                refresh_teacher(teacher, model)
                evaluated = (epoch + 1) % opt.evaluate_every == 0 or epoch + 1 == opt.n_epochs
                metrics, test_embeddings = evaluate(model, evaluators, opt) if evaluated else ({}, None)
                entry = {'epoch': epoch, **progress.averages(), **rates, **metrics}
                run.summary.add_epoch(entry)
                progress = EpochProgress()
                if distributed.is_main():
                    pictures = save_best(folder, model, run.summary, opt.storage_metrics, entry, test_embeddings,
                                         test_parts, opt.save_embeddings)
                    run.save(os.path.join(folder, LAST_CHECKPOINT), epoch + 1, progress, online.run_id)
                    run.summary.save(folder)
                    pictures.append(plot_history(run.summary.history, opt.evaluation_metrics, folder,
                                                 run.summary.best_epochs()))
                    online.log(entry, pictures)
                logger.info(epoch_line(entry))
                if stop.agree() and epoch + 1 < opt.n_epochs:
                    return report_stop(stop, folder)
        except evaluation.NonFiniteEmbeddings as error:
            raise UserError(f'{error}; {last_checkpoint_note(folder)}') from None
        except FileWriteError as error:
            raise write_failed(error, folder) from None
        finally:
            online.finish()
            if lock is not None:
                lock.release()
    logger.info('done: best %s', json.dumps(run.summary.to_dict()['best']))
    for selection in run.summary.selected_on_validation():
        tested = ' | '.join(f'{name} {number(value)}' for name, value in selection['test'].items())
        logger.info('selected on validation: epoch %d, the best %s (%s); %s', selection['epoch'], selection['on'],
                    number(selection['value']), f'its test metrics: {tested}' if tested else 'no test metrics')
    return 0


def write_failed(error, folder):
    """The one-line error for a write that failed (disk full, quota): what is intact and how to go on."""
    return UserError(f'{error}; {last_checkpoint_note(folder)}: make room, then {how_to_continue(folder)}')


def report_stop(stop, folder):
    """Log how to continue a run stopped by a signal; the exit code that says why it stopped."""
    command = 'torchrun <as before> main.py' if distributed.is_distributed() else 'python main.py'
    logger.warning('stopped by %s; continue with: %s --resume %s', stop.requested, command, folder)
    return stop.exit_code


def run_name(opt):
    return opt.savename or opt.group or 'run'


def dry_run(opt):
    """Check the dataset path and its split files, print the resolved configuration and the split sizes (the
    warnings about them on stderr); decode no image, build nothing, export no digits."""
    root, splits, warnings = datasets.load_splits(opt, write=False)
    config = plain_config(opt)
    config['resolved_dataset_folder'] = root
    print(json.dumps(config, indent=2))
    if opt.applied_defaults:
        print(applied_defaults_line(opt.dataset, opt.applied_defaults))
    print(f'loss: {criteria.describe(opt.loss, opt)}')
    print(f'batches: {datasampler.DRAWS[opt.data_sampler]}')
    if splits is not None:
        print(f'splits listed: {datasets.describe_splits(splits)}')
    for warning in warnings:
        print(f'warning: {warning}', file=sys.stderr)
    return 0


def report_data(data):
    """Log the warnings about the splits and what the validation split is, and repeat in the run's log how many
    unreadable images the splits left out (each was named on loading)."""
    for note in data['notes']:
        logger.info(note)
    for warning in data['warnings']:
        logger.warning(warning)
    for split in ('training', *datasets.TEST_PARTS, 'validation'):
        if data[split] is not None and data[split].left_out:
            logger.warning('%s: left out %d unreadable images: %s', data[split].name, len(data[split].left_out),
                           ', '.join(data[split].left_out))


def evaluate(model, evaluators, opt):
    """Metrics of every evaluated split (test names as they are, validation prefixed val_) and the time taken;
    the test embeddings {part: (features, labels)} ('testing', or 'query' and 'gallery'; None with
    --no_test_metrics).

    Under torchrun each rank embeds its shard of every part; rank 0 computes the metrics of them all and every rank
    gets them. Embeddings that have collapsed are warned about, and their split's `collapsed` (`val_collapsed`) is
    set, which keeps the epoch from becoming a best checkpoint.
    """
    started, results, embeddings = time.perf_counter(), {}, {}
    for prefix, evaluator in evaluators.items():
        result = evaluator.evaluate(model, opt.evaluation_metrics, amp=opt.amp, use_gpu=opt.evaluate_on_gpu,
                                         seed=opt.seed, what='validation' if prefix else 'test')
        results.update({prefix + name: value for name, value in result.metrics.items()})
        embeddings[prefix] = result.embedded
        if result.collapse:
            results[prefix + COLLAPSED] = True
            if distributed.is_main():
                logger.warning(result.collapse)
    results['eval_time_s'] = time.perf_counter() - started
    return results, embeddings.get('')


def save_best(folder, model, summary, storage_metrics, entry, test_embeddings, test_parts, save_embeddings=False):
    """A checkpoint per storage metric that improved (with `save_embeddings`, also that epoch's test embeddings and
    their singular-value spectrum); with a new best Recall@1 also retrieval.png of the test embeddings just
    computed. Returns the pictures written."""
    pictures = []
    for name in storage_metrics:
        if summary.improved(name):
            save_checkpoint(os.path.join(folder, f'best_{name}.pth'), model, summary.config, entry['epoch'], entry)
            if save_embeddings and test_embeddings:
                write_embeddings(os.path.join(folder, f'best_{name}_embeddings.npz'), test_embeddings, test_parts)
                features = np.concatenate([features for features, _ in test_embeddings.values()])
                pictures.append(plot_spectrum(features, os.path.join(folder, f'best_{name}_spectrum.png'),
                                              f'test embeddings of the best {name} (epoch {entry["epoch"]})'))
            if name == 'e_recall@1':
                pictures.append(save_test_retrieval_grid(os.path.join(folder, 'retrieval.png'), test_embeddings,
                                                         test_parts))
    return pictures


if __name__ == '__main__':
    code = exit_code(main)
    distributed.teardown(finished=code == 0)
    sys.exit(code)
