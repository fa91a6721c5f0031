"""Search your own images with a trained checkpoint: a faiss index of a catalogue, grown and queried.

    python Search_Index.py build --checkpoint run/best_e_recall@1.pth --images catalogue/ --index shop_index
    python Search_Index.py add --index shop_index --images new_photos/            # --skip_existing: only new paths
    python Search_Index.py query --index shop_index --queries photo.jpg -k 10 --out hits.csv --picture hits.png
    python Search_Index.py calibrate --index shop_index --queries labelled.csv --max_false_match 0.01
    python Search_Index.py query --index shop_index --queries shop_photos/ --classify --out answers.json

--images and --queries take an image, a folder (class folders, the `folder` dataset's DIR/<split>/<class>/*, or a
plain folder of images) or a CSV list (path[,label][,split]). The reference, with the file formats: docs/search.md.
"""
import logging
import os
import sys
import time

import parameters
from plumbing.errors import UserError, exit_code
from plumbing.runtime import select_device
from reporting.logs import setup_logging
from search import index_store, knn, querying
from search.catalogue import read_catalogue
from run_folder.saved_flags import EVALUATION_SETTINGS
from search.embedding import Embedder, sha256_of
from search.index_store import (DEFAULT_HNSW_M, INDEX_TYPES, SearchIndex, describe, writing)

logger = logging.getLogger('Search_Index')
DEFAULT_K = 10
DEFAULT_CALIBRATION_K = 5
DEFAULT_MAX_FALSE_MATCH = 0.01
PICTURE_QUERIES = 8


def default_workers():
    return min(4, os.cpu_count() or 1)


def build_parser():
    parser = parameters.OneLineArgumentParser(
        prog='Search_Index.py', description='Build, grow and query a faiss index of your images with a checkpoint.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='{build,add,query,calibrate}')

    build = commands.add_parser('build', help='Embed a catalogue and write a new index.')
    build.add_argument('--checkpoint', required=True, type=os.path.expanduser,
                       help='A checkpoint of main.py (best_e_recall@1.pth, ...) or the authors\' net.pth.')
    add_images_flags(build, '--images', 'The catalogue', required=True)
    build.add_argument('--index', required=True, type=os.path.expanduser, metavar='OUT',
                       help='The index folder to write (metadata.json, index-G.faiss, items-G.csv).')
    build.add_argument('--index_type', default='flat', metavar='TYPE',
                       help=f'{", ".join(INDEX_TYPES)} (exact search, the default; IVF and HNSW are approximate, for '
                            f'large catalogues), or any faiss index_factory string such as IVF4096,PQ32.')
    build.add_argument('--nlist', type=int, default=None,
                       help='IVF lists (default about 4 sqrt(N), at most N / 39).')
    build.add_argument('--hnsw_m', type=int, default=DEFAULT_HNSW_M, help='HNSW links per vector.')
    build.add_argument('--overwrite', action='store_true',
                       help='Replace an index already in OUT (also a damaged one); files beside it stay.')
    build.add_argument('--allow_other_files', action='store_true',
                       help='Write the index into a folder that holds other files (none of them is changed).')
    group = build.add_argument_group('embedding settings, for a checkpoint without a config (the authors\' '
                                     'net.pth); a flag given here overrides the config')
    parameters.add_setting_overrides(group, EVALUATION_SETTINGS)
    add_runtime_flags(build)

    add = commands.add_parser('add', help='Embed more images and append them to an index.')
    add.add_argument('--index', required=True, type=os.path.expanduser, metavar='OUT')
    add_images_flags(add, '--images', 'The images to add', required=True)
    add_checkpoint_flag(add)
    add.add_argument('--skip_existing', action='store_true',
                     help='Leave out the images whose path is in the index already (without it they are refused).')
    add_runtime_flags(add)

    query = commands.add_parser('query', help='The nearest catalogue images of each query image.')
    query.add_argument('--index', required=True, type=os.path.expanduser, metavar='OUT')
    add_images_flags(query, '--queries', 'The query images', required=True)
    add_checkpoint_flag(query)
    query.add_argument('-k', '--k', type=int, default=None,
                       help=f'Neighbours per query (default {DEFAULT_K}; with --classify the calibrated k).')
    query.add_argument('--out', type=os.path.expanduser, default=None, metavar='FILE',
                       help='Write the neighbours to FILE.csv (a row per neighbour) or FILE.json; without it they '
                            'are printed.')
    query.add_argument('--picture', type=os.path.expanduser, default=None, metavar='FILE.png',
                       help='Draw the first queries and their neighbours (like a run\'s retrieval.png).')
    query.add_argument('--picture_queries', type=int, default=PICTURE_QUERIES, help='Queries in --picture.')
    query.add_argument('--exclude_self', action='store_true',
                       help='A query whose path is in the index is not its own neighbour.')
    query.add_argument('--classify', action='store_true',
                       help='Answer the majority label of the k neighbours, "unknown" below the threshold.')
    query.add_argument('--threshold', type=float, default=None,
                       help='The similarity below which --classify answers unknown (default: the calibrated one).')
    add_search_flags(query)
    add_runtime_flags(query)

    calibrate = commands.add_parser(
        'calibrate', help='Choose the kNN threshold on labelled queries and store it in the index.')
    calibrate.add_argument('--index', required=True, type=os.path.expanduser, metavar='OUT')
    add_images_flags(calibrate, '--queries', 'Labelled query images (class folders or a CSV with labels)',
                     required=True)
    add_checkpoint_flag(calibrate)
    calibrate.add_argument('-k', '--k', type=int, default=DEFAULT_CALIBRATION_K, help='Neighbours that vote.')
    calibrate.add_argument('--max_false_match', type=float, default=DEFAULT_MAX_FALSE_MATCH,
                           help='The false-match rate the threshold may give at most (a wrong label answered).')
    calibrate.add_argument('--exclude_self', action='store_true',
                           help='Always on (accepted for older command lines): a query that is an image of the index '
                                'is left out of its own neighbours (leave-one-out on the catalogue).')
    calibrate.add_argument('--out', type=os.path.expanduser, default=None, metavar='FILE.json',
                           help='Also write the calibration to FILE.json.')
    add_search_flags(calibrate)
    add_runtime_flags(calibrate)
    return parser


def add_images_flags(parser, flag, what, required):
    parser.add_argument(flag, required=required, type=os.path.expanduser, metavar='IMAGE|DIR|CSV',
                        help=f'{what}: an image, a folder or a CSV list (path[,label][,split]).')
    parser.add_argument('--split', nargs='+', default=None, metavar='SPLIT',
                        help='Only the images of these splits (train, test, query, gallery) of a split folder or list.')
    parser.add_argument('--no_folder_labels', action='store_true',
                        help='In a plain folder, do not label images by their first folder below it.')


def add_checkpoint_flag(parser):
    parser.add_argument('--checkpoint', type=os.path.expanduser, default=None,
                        help='The checkpoint the index was built with (default: the path it records); another is '
                             'refused.')


def add_search_flags(parser):
    parser.add_argument('--nprobe', type=int, default=None, help='IVF lists searched (default: the index\'s, 64).')
    parser.add_argument('--ef_search', type=int, default=None,
                        help='HNSW search breadth (default: the index\'s, 64).')


def add_runtime_flags(parser):
    group = parser.add_argument_group('runtime')
    group.add_argument('--bs', type=int, default=64, help='Images embedded at a time.')
    group.add_argument('--workers', type=int, default=default_workers(),
                       help='Data-loading worker processes (0: in the main process).')
    group.add_argument('--gpu', type=int, nargs='+', default=[0], help='The GPU to embed on, where there is one.')


def check_runtime(opt):
    if opt.bs < 1:
        raise UserError(f'--bs must be positive, got {opt.bs}')
    if opt.workers < 0:
        raise UserError(f'--workers must be 0 or more, got {opt.workers}')
    if getattr(opt, 'k', None) is not None and opt.k < 1:
        raise UserError(f'-k must be at least 1, got {opt.k}')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = build_parser().parse_args(argv)
    setup_logging()
    if hasattr(sys.stdout, 'reconfigure'):  # a file name that is not UTF-8 is printed escaped, as stderr does
        sys.stdout.reconfigure(errors='backslashreplace')
    check_runtime(opt)
    return {'build': build, 'add': add, 'query': query, 'calibrate': calibrate}[opt.command](opt)


def catalogue_of(opt, flag):
    return read_catalogue(getattr(opt, flag.strip('-')), splits=opt.split, folder_labels=not opt.no_folder_labels,
                          flag=flag)


def check_build_target(opt):
    """A one-line error where --index holds an index (without --overwrite) or other files (without
    --allow_other_files)."""
    kind, detail = index_store.contents(opt.index)
    if kind == 'index' and not opt.overwrite:
        raise UserError(f'--index {opt.index} holds an index already; add images to it with Search_Index.py add, '
                        f'or pass --overwrite to replace it')
    if kind == 'damaged' and not opt.overwrite:
        raise UserError(f'--index {opt.index} holds a damaged index ({detail.rstrip(".")}); pass --overwrite to '
                        f'replace it')
    if kind == 'other' and not opt.allow_other_files:
        shown = ', '.join(detail[:3]) + (f' and {len(detail) - 3} more' if len(detail) > 3 else '')
        raise UserError(f'--index {opt.index} is not empty and holds no index ({shown}); pass a new or empty folder, '
                        f'or --allow_other_files to write the index beside those files (none of them is changed)')


def build(opt):
    check_build_target(opt)
    if opt.nlist is not None and opt.nlist < 1:
        raise UserError(f'--nlist must be at least 1, got {opt.nlist}')
    catalogue = catalogue_of(opt, '--images')
    given, defaults = parameters.setting_overrides(opt, EVALUATION_SETTINGS)
    embedder = Embedder.from_checkpoint(opt.checkpoint, given, defaults, select_device(opt.gpu))
    checkpoint = {'path': os.path.abspath(opt.checkpoint), 'sha256': embedder.checkpoint['sha256'],
                  'config': embedder.checkpoint['config']}
    with writing(opt.index):
        check_build_target(opt)  # again, holding the folder's lock: another build may have written it meanwhile
        search_index = SearchIndex.new(opt.index, opt.index_type, embedder.embed_dim, len(catalogue),
                                       embedder.settings, checkpoint, nlist=opt.nlist, hnsw_m=opt.hnsw_m)
        stats = querying.index_catalogue(search_index, embedder, catalogue, batch_size=opt.bs, workers=opt.workers)
        search_index.save('build', images=os.path.abspath(catalogue.source), indexed=stats['indexed'],
                          left_out=len(stats['left_out']), **timing(stats))
    report_indexing('indexed', search_index, catalogue, stats)
    return 0


def timing(stats):
    """The seconds a command spent embedding, indexing or searching, for the record (and benchmarks)."""
    return {f'{name}_s': round(stats[f'{name}_s'], 4) for name in ('embed', 'index', 'search') if f'{name}_s' in stats}


def report_indexing(verb, search_index, catalogue, stats):
    rate = stats['images'] / max(stats['embed_s'] + stats['index_s'], 1e-9)
    kind = search_index.metadata['index']
    print(f'{verb} {stats["indexed"]} images of {catalogue.source} ({len(stats["left_out"])} unreadable, left out) '
          f'into {search_index.folder}: {len(search_index)} images, {kind["factory"]} ({describe(kind["type"])}) '
          f'index of {search_index.embed_dim}-d embeddings; {rate:.1f} images/s')


def opened_index(opt):
    """The index of --index, and the Embedder of its checkpoint (--checkpoint or the one it records), refused in
    one line where the checkpoint is another than the index was built with."""
    search_index = SearchIndex.load(opt.index)
    recorded = search_index.metadata['checkpoint']
    path = opt.checkpoint or recorded['path']
    if not os.path.isfile(path):
        raise UserError(f'the checkpoint {path} that {opt.index} was built with is not there any more; pass its new '
                        f'place with --checkpoint')
    digest = sha256_of(path)
    if digest != recorded['sha256']:
        raise UserError(f'{opt.index} was built with the checkpoint {recorded["path"]} (sha256 '
                        f'{recorded["sha256"][:12]}, {search_index.embed_dim}-d embeddings), not {path} (sha256 '
                        f'{digest[:12]}{other_size(path)}); use the checkpoint it was built with, or build a new '
                        f'index')
    embedder = Embedder(path, search_index.metadata['embedding'], select_device(opt.gpu))
    return search_index, embedder


def other_size(path):
    """', N-d embeddings' of a checkpoint, from its config or its head, or ''."""
    from run_folder.checkpoint import read_checkpoint, weights_of

    try:
        checkpoint = read_checkpoint(path)
        config = checkpoint.get('config') if isinstance(checkpoint, dict) else None
        if isinstance(config, dict) and 'embed_dim' in config:
            return f', {config["embed_dim"]}-d embeddings'
        heads = [tensor for key, tensor in weights_of(checkpoint, path).items() if key.endswith('last_linear.weight')]
        return f', {heads[0].shape[0]}-d embeddings' if heads else ''
    except UserError:
        return ''


def add(opt):
    catalogue = catalogue_of(opt, '--images')
    with writing(opt.index):
        search_index, embedder = opened_index(opt)
        present = [path for path in catalogue.paths if search_index.row_of(path) is not None]
        if present and not opt.skip_existing:
            raise UserError(f'{len(present)} of the {len(catalogue)} images are in {opt.index} already (e.g. '
                            f'{present[0]}); an index holds a path once: pass --skip_existing to add only the others')
        if present:
            logger.info('leaving out %d images whose path is in the index already', len(present))
            catalogue = catalogue.select([i for i, path in enumerate(catalogue.paths)
                                          if search_index.row_of(path) is None])
        if not len(catalogue):
            print(f'nothing to add: every image of {opt.images} is in {opt.index} already')
            return 0
        stats = querying.index_catalogue(search_index, embedder, catalogue, batch_size=opt.bs, workers=opt.workers)
        search_index.save('add', images=os.path.abspath(catalogue.source), indexed=stats['indexed'],
                          left_out=len(stats['left_out']), skipped_existing=len(present), **timing(stats))
    report_indexing('added', search_index, catalogue, stats)
    return 0


def query(opt):
    querying.check_output(opt.out, '--out', ('.csv', '.json'))
    querying.check_output(opt.picture, '--picture', ('.png',))
    queries = catalogue_of(opt, '--queries')
    search_index, embedder = opened_index(opt)
    calibration = search_index.metadata.get('calibration') if opt.classify else None
    threshold = opt.threshold
    if opt.classify:
        if not search_index.labelled():
            raise UserError(f'{opt.index} holds no labels, so --classify has nothing to answer; build it from class '
                            f'folders or a CSV with a label column')
        if threshold is None and calibration:
            threshold = calibration['threshold']
        elif threshold is None:
            logger.warning('no threshold: every query gets the majority label of its neighbours; choose one with '
                           'Search_Index.py calibrate, or pass --threshold')
    # A classification keeps the calibration's k and search parameters unless told otherwise.
    calibrated = calibration['search_parameters'] if calibration else {}
    k = opt.k or (calibration['k'] if calibration else DEFAULT_K)
    parameters_used = search_index.set_search_parameters(
        nprobe=opt.nprobe if opt.nprobe is not None else calibrated.get('nprobe'),
        efSearch=opt.ef_search if opt.ef_search is not None else calibrated.get('efSearch'))
    if calibration and opt.threshold is None:
        differing = [f'-k {calibration["k"]}, not {k}'] if k != calibration['k'] else []
        differing += [f'{name} {value}, not {parameters_used[name]}' for name, value in calibrated.items()
                      if parameters_used.get(name) != value]
        if differing:
            logger.warning('the threshold was calibrated with %s: its false-match rate may not hold',
                           '; '.join(differing))
    results, stats = querying.query_catalogue(search_index, embedder, queries, k=k, batch_size=opt.bs,
                                              workers=opt.workers, exclude_self=opt.exclude_self)
    answers = querying.classify(search_index, results, threshold) if opt.classify else None
    records = querying.records(search_index, results, answers)
    summary = {'index': os.path.abspath(opt.index), 'queries': os.path.abspath(queries.source), 'k': k,
               'exclude_self': opt.exclude_self, 'search_parameters': parameters_used,
               'left_out': [path for path, _ in stats['left_out']], 'timing': timing(stats)}
    if opt.classify:
        summary['threshold'] = threshold
    if opt.out:
        querying.write_records(opt.out, records, summary)
    else:
        print_records(records)
    if opt.picture:
        querying.save_picture(opt.picture, records[:max(opt.picture_queries, 1)])
    rate = stats['answered'] / max(stats['seconds'], 1e-9)
    where = f' to {opt.out}' if opt.out else ''
    print(f'{stats["answered"]} queries ({len(stats["left_out"])} unreadable, left out), {k} neighbours each{where}; '
          f'{rate:.1f} queries/s' + (f'; picture {opt.picture}' if opt.picture else ''))
    if answers is not None:
        unknown = sum(answer is None for _, _, answer in answers)
        print(f'classified: {len(answers) - unknown} answered, {unknown} unknown'
              + (f' (threshold {threshold:.4f})' if threshold is not None else
                 ' (no threshold needed, as calibrated)' if calibration else ' (no threshold)'))
    return 0


def print_records(records):
    classified = bool(records) and 'prediction' in records[0]
    for record in records:
        label = f' [{record["query_label"]}]' if record['query_label'] is not None else ''
        answer = ''
        if classified:
            confidence = '' if record['confidence'] is None else f', confidence {record["confidence"]:.4f}'
            answer = f' -> {record["prediction"] or "unknown"}{confidence}'
        print(f'{record["query"]}{label}{answer}')
        for neighbour in record['neighbours']:
            shown = f' [{neighbour["label"]}]' if neighbour['label'] is not None else ''
            print(f'  {neighbour["rank"]:3d}  {neighbour["similarity"]:.4f}  {neighbour["path"]}{shown}')


def calibrate(opt):
    querying.check_output(opt.out, '--out', ('.json',))
    if not 0 <= opt.max_false_match < 1:
        raise UserError(f'--max_false_match must be in [0, 1), got {opt.max_false_match}')
    queries = catalogue_of(opt, '--queries')
    unlabelled = [path for path, label in zip(queries.paths, queries.labels) if label is None]
    if unlabelled:
        raise UserError(f'calibrate needs labelled queries, and {len(unlabelled)} of {queries.source} have no label '
                        f'(e.g. {unlabelled[0]}); use class folders or a CSV with a label column')
    with writing(opt.index):
        search_index, embedder = opened_index(opt)
        if not search_index.labelled():
            raise UserError(f'{opt.index} holds no labels, so there is no kNN answer to calibrate')
        parameters_used = search_index.set_search_parameters(nprobe=opt.nprobe, efSearch=opt.ef_search)
        # A query that is an image of the index would find itself at similarity 1 and vote for its own label.
        results, stats = querying.query_catalogue(search_index, embedder, queries, k=opt.k, batch_size=opt.bs,
                                                  workers=opt.workers, exclude_self=True)
        in_index = sum(search_index.row_of(result.path) is not None for result in results)
        if in_index:
            logger.info('%d of the queries are images of the index: each is left out of its own neighbours', in_index)
        answers = querying.classify(search_index, results)
        chosen = knn.choose_threshold([answer for answer, _, _ in answers], [c for _, c, _ in answers],
                                      [result.label for result in results], opt.max_false_match)
        catalogue_labels = {label for label in search_index.labels if label is not None}
        known = sum(result.label in catalogue_labels for result in results)
        calibration = {**chosen, 'k': opt.k, 'max_false_match': opt.max_false_match, 'queries': len(results),
                       'queries_of_catalogue_classes': known, 'queries_of_other_classes': len(results) - known,
                       'exclude_self': True, 'queries_in_index': in_index, 'search_parameters': parameters_used,
                       'source': os.path.abspath(queries.source), 'time': time.strftime('%Y-%m-%d %H:%M:%S')}
        search_index.metadata['calibration'] = calibration
        search_index.save_metadata()
    if opt.out:
        from plumbing.files import atomic_write_json

        atomic_write_json(opt.out, calibration)
    if chosen['threshold'] is None:
        head = 'no threshold needed: every answer stands'
    else:
        head = (f'threshold {chosen["threshold"]:.4f}: answers more confident than {chosen["rejected_confidence"]:.4f}'
                f' stand')
    print(f'{head} (k {opt.k}) on {len(results)} labelled queries ({known} of catalogue classes, '
          f'{len(results) - known} of others, {in_index} in the index): false-match rate '
          f'{chosen["false_match_rate"]:.4f} (target <= {opt.max_false_match}), correct {chosen["correct_rate"]:.4f}, '
          f'unknown {chosen["unknown_rate"]:.4f}; stored in {opt.index}')
    if chosen['rejects_all']:
        logger.warning('the threshold answers no query: at any lower one more than %.2f%% of these queries get a '
                       'wrong label; the embedding does not separate them', 100 * opt.max_false_match)
    return 0


if __name__ == '__main__':
    sys.exit(exit_code(main))
