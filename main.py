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

import torch

import architectures
import criteria
import datasampler
import datasets
import evaluation
import parameters
from utilities import distributed
from evaluation.figures import save_test_retrieval_grid
from utilities.checkpoint import plain_config, read_checkpoint, save_checkpoint
from utilities.errors import UserError, exit_code
from utilities.files import FileWriteError
from utilities.logs import epoch_line, setup_logging
from utilities.online_log import OnlineLog
from utilities.optimization import build_optimizer, build_scheduler
from utilities.plots import plot_history
from utilities.resume import TrainingState, options_for_resume
from utilities.run_folder import (LAST_CHECKPOINT, how_to_continue, last_checkpoint_note, new_run_folder,
                                  resume_checkpoint)
from utilities.run_lock import claim_run_folder
from utilities.run_record import applied_defaults_line, describe_run, record_start
from utilities.runtime import seed_everything
from utilities.stop_signals import StopSignals, ignore_stop_signals
from utilities.summary import RunSummary
from utilities.teacher import make_teacher, refresh_teacher
from utilities.training import EpochProgress, NonFiniteLoss, train_one_epoch

logger = logging.getLogger('main')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = parameters.build_parser(prog='main.py')
    opt = parameters.parse_args(argv, parser)
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
    opt.n_classes = data['training'].n_classes
    sampler = datasampler.select(opt, data['training'].labels)
    train_loader = make_loader(data['training'], opt.kernels, device, batch_sampler=sampler)
    test_parts = datasets.test_parts(data)
    eval_loaders = {'': {part: make_loader(test_set, opt.kernels, device, batch_size=opt.bs)
                         for part, test_set in test_parts.items()}}
    if data['validation'] is not None:
        eval_loaders['val_'] = {'testing': make_loader(data['validation'], opt.kernels, device, batch_size=opt.bs)}

    model = architectures.select(opt.arch, opt, load_pretrained=resumed is None).to(device)
    network = distributed.wrap(model, device)  # DDP under torchrun, else the model itself
    teacher = make_teacher(model)
    if opt.compile:
        model.compile()
    criterion = criteria.select(opt.loss, opt).to(device)
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
    run.summary.sessions.append(session)
    online = OnlineLog(opt.log_online and distributed.is_main(), opt.project, opt.group, os.path.basename(folder),
                       run.summary.config, folder, run_id=resumed and online_id,
                       collective_timeout_s=opt.dist_timeout * 60)
    logger.info('run folder %s | %d training images of %d classes | %s on %s | batches: %s', folder,
                len(data['training']), opt.n_classes, opt.arch, device, datasampler.DRAWS[opt.data_sampler])
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
                metrics, test_embeddings = evaluate(model, eval_loaders, device, opt) if evaluated else ({}, None)
                entry = {'epoch': epoch, **progress.averages(), **rates, **metrics}
                run.summary.add_epoch(entry)
                progress = EpochProgress()
                if distributed.is_main():
                    pictures = save_best(folder, model, run.summary, opt.storage_metrics, entry, test_embeddings,
                                         test_parts)
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
    print(f'batches: {datasampler.DRAWS[opt.data_sampler]}')
    if splits is not None:
        print(f'splits listed: {datasets.describe_splits(splits)}')
    for warning in warnings:
        print(f'warning: {warning}', file=sys.stderr)
    return 0


def report_data(data):
    """Log the warnings about the splits, and repeat in the run's log how many unreadable images the splits left
    out (each was named on loading)."""
    for warning in data['warnings']:
        logger.warning(warning)
    for split in ('training', *datasets.TEST_PARTS, 'validation'):
        if data[split] is not None and data[split].left_out:
            logger.warning('%s: left out %d unreadable images: %s', data[split].name, len(data[split].left_out),
                           ', '.join(data[split].left_out))


def make_loader(dataset, workers, device, batch_sampler=None, batch_size=None):
    """Training (batch_sampler) or evaluation (batch_size, in order; under torchrun this rank's shard) loader."""
    shard = distributed.ShardSampler(len(dataset), distributed.world_size(), distributed.rank())
    batching = {'batch_sampler': batch_sampler} if batch_sampler is not None else {'batch_size': batch_size,
                                                                                   'sampler': shard}
    # A private generator keeps the global torch RNG untouched by loader iteration (bit-exact resume).
    return torch.utils.data.DataLoader(dataset, num_workers=workers, pin_memory=device.type == 'cuda',
                                       persistent_workers=workers > 0, worker_init_fn=ignore_stop_signals,
                                       generator=torch.Generator(), **batching)


def evaluate(model, loaders, device, opt):
    """Metrics of every evaluation split (test names as they are, validation prefixed val_) and the time taken;
    the test embeddings {part: (features, labels)} ('testing', or 'query' and 'gallery').

    Under torchrun each rank embeds its shard of every part; rank 0 computes the metrics of them all and every rank
    gets them.
    """
    started, results, embeddings = time.perf_counter(), {}, {}
    for prefix, parts in loaders.items():
        embedded = {}
        for part, loader in parts.items():
            features, labels = evaluation.extract_embeddings(model, loader, device, amp=opt.amp)
            embedded[part] = (distributed.gather_shards(features, len(loader.dataset)),
                              distributed.gather_shards(labels, len(loader.dataset)))
        metrics = distributed.on_main(evaluation.metrics_of_test_embeddings, embedded, opt.evaluation_metrics,
                                      use_gpu=opt.evaluate_on_gpu, seed=opt.seed)
        results.update({prefix + name: value for name, value in metrics.items()})
        embeddings[prefix] = embedded
    results['eval_time_s'] = time.perf_counter() - started
    return results, embeddings['']


def save_best(folder, model, summary, storage_metrics, entry, test_embeddings, test_parts):
    """A checkpoint per storage metric that improved; with a new best Recall@1 also retrieval.png of the test
    embeddings just computed. Returns the pictures written."""
    pictures = []
    for name in storage_metrics:
        if summary.improved(name):
            save_checkpoint(os.path.join(folder, f'best_{name}.pth'), model, summary.config, entry['epoch'], entry)
            if name == 'e_recall@1':
                pictures.append(save_test_retrieval_grid(os.path.join(folder, 'retrieval.png'), test_embeddings,
                                                         test_parts))
    return pictures


if __name__ == '__main__':
    code = exit_code(main)
    distributed.teardown()
    sys.exit(code)
