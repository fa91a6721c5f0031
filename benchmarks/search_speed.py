"""Time Search_Index.py build and query on a generated catalogue, exact and approximate indexes, and the approximate
indexes' recall@k against the exact one.

    python benchmarks/search_speed.py [--images 20000 --items 2000 --queries 1000 -k 10] [--json FILE]

The catalogue: photo-like JPEGs (benchmarks/photos.py) of `--items` products, each seen `--images / --items` times
(random crops, flips and brightness of one photo), in class folders. The checkpoint: an untrained `--arch` (random
weights, no download) saved as main.py saves its checkpoints. Each index type is built by the command itself
(`build`: embedding, indexing and writing, timed as a whole), then queried with the same `--queries` catalogue images
(`query --exclude_self`, a JSON output: embedding and search, timed as a whole; the search alone is the command's own
timing). Rates are images (queries) per second of wall-clock time; the ratios are quotients of rates measured in this
one run, so they hold on a machine whose load changes less than its speed; the embedding, the same work for every
index type, is most of every build and query. A sweep of each approximate index's search parameter (nprobe, efSearch)
then gives recall@k and search-alone speed on the stored vectors of the query images.
"""
import argparse
import contextlib
import csv
import io
import json
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import architectures  # noqa: E402  (needs the repository root on the path)
import Search_Index  # noqa: E402
from benchmarks.photos import photo  # noqa: E402
from run_folder.checkpoint import save_checkpoint  # noqa: E402
from search.index_store import SearchIndex  # noqa: E402

INDEX_TYPES = ('flat', 'ivf', 'hnsw')
SWEEP = {'ivf': ('nprobe', (8, 16, 32, 64, 128)), 'hnsw': ('efSearch', (16, 32, 64, 128))}
"""The search parameters the sweep tries on each approximate index."""


def write_catalogue(root, n_images, n_items, size=(64, 48), seed=0):
    """`n_images` JPEGs of `size` in root/item_NNNNN/ folders: `n_items` photos, each cropped, flipped and brightened
    at random into its share of the images. Returns the image paths, in the order written."""
    rng = np.random.default_rng(seed)
    width, height = size
    bases = [photo(width * 5 // 4, height * 5 // 4, rng) for _ in range(n_items)]
    paths = []
    for k in range(n_images):
        item = k % n_items
        base = bases[item]
        crop_w, crop_h = (int(side * rng.uniform(0.8, 1.0)) for side in base.size)
        left, top = rng.integers(0, base.width - crop_w + 1), rng.integers(0, base.height - crop_h + 1)
        image = base.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.BILINEAR)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        pixels = np.clip(np.asarray(image, np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
        folder = root / f'item_{item:05d}'
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f'image_{k:06d}.jpg')
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def write_queries(path, paths, n_queries, seed=1):
    """A CSV list (path,label; paths relative to its folder) of `n_queries` catalogue images drawn with `seed`."""
    chosen = np.sort(np.random.default_rng(seed).choice(len(paths), min(n_queries, len(paths)), replace=False))
    with open(path, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['path', 'label'])
        for k in chosen:
            writer.writerow([paths[k].relative_to(path.parent), paths[k].parent.name])
    return len(chosen)


def command(*args):
    """Search_Index.py's main(args) and its wall-clock seconds; its printed summary is kept for the log."""
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = Search_Index.main([str(a) for a in args])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f'Search_Index.py {" ".join(map(str, args))} failed ({code}): {printed.getvalue()}')
    return seconds


def recall_at_k(found, exact):
    """Mean over queries of |approximate top-k ∩ exact top-k| / |exact top-k|."""
    shares = []
    for approximate, reference in zip(found, exact):
        wanted = {n['id'] for n in reference['neighbours']}
        shares.append(len(wanted & {n['id'] for n in approximate['neighbours']}) / max(len(wanted), 1))
    return float(np.mean(shares))


def sweep(work, kinds, query_paths, k):
    """Recall@k against the exact index and search-alone queries/s of each SWEEP setting, on the stored vectors of the
    query images (themselves left out), searched in one batch."""
    exact = SearchIndex.load(str(work / 'index_flat'))
    rows = np.array([exact.row_of(path) for path in query_paths])
    vectors = np.ascontiguousarray(exact.index.reconstruct_batch(rows), dtype=np.float32)
    wanted = [set(found) for found in exact.search(vectors, k, rows)[1]]
    results = {}
    for kind in kinds:
        if kind not in SWEEP:
            continue
        index = SearchIndex.load(str(work / f'index_{kind}'))
        name, values = SWEEP[kind]
        results[kind] = {}
        for value in values:
            index.set_search_parameters(**{name: value})
            start = time.perf_counter()
            found = index.search(vectors, k, rows)[1]
            seconds = time.perf_counter() - start
            recall = float(np.mean([len(w & set(f)) / max(len(w), 1) for w, f in zip(wanted, found)]))
            results[kind][f'{name} {value}'] = {'recall': recall, 'queries_per_s': len(rows) / seconds}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=20000, help='catalogue images')
    parser.add_argument('--items', type=int, default=2000, help='distinct photos the images are variants of')
    parser.add_argument('--queries', type=int, default=1000, help='catalogue images that query the index')
    parser.add_argument('-k', '--k', type=int, default=10, help='neighbours per query (the recall@k)')
    parser.add_argument('--photo_size', default='64x48', help='catalogue image size, WxH')
    parser.add_argument('--arch', default='resnet18_normalize')
    parser.add_argument('--embed_dim', type=int, default=128)
    parser.add_argument('--image_size', type=int, default=32)
    parser.add_argument('--bs', type=int, default=128)
    parser.add_argument('--workers', type=int, default=1)
    parser.add_argument('--index_types', nargs='+', default=list(INDEX_TYPES), choices=INDEX_TYPES)
    parser.add_argument('--folder', default=None, help='work here (kept) instead of a temporary folder (removed)')
    parser.add_argument('--json', default=None, help='also write the report to this file')
    args = parser.parse_args(argv)
    if 'flat' not in args.index_types:
        parser.error('--index_types needs flat: the recall of the others is measured against it')
    args.index_types = ['flat'] + [kind for kind in args.index_types if kind != 'flat']
    work = pathlib.Path(args.folder or tempfile.mkdtemp(prefix='search_speed_'))
    try:
        report = run(args, work)
    finally:
        if args.folder is None:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + '\n')
    return report


def run(args, work):
    catalogue = work / 'catalogue'
    start = time.perf_counter()
    paths = write_catalogue(catalogue, args.images, args.items, tuple(map(int, args.photo_size.split('x'))))
    generated_s = time.perf_counter() - start
    queries = work / 'queries.csv'
    n_queries = write_queries(queries, paths, args.queries)
    torch.manual_seed(0)
    network = architectures.build(args.arch, args.embed_dim, pretrained=False, image_size=args.image_size)
    checkpoint = work / 'checkpoint.pth'
    save_checkpoint(str(checkpoint), network, {'arch': args.arch, 'embed_dim': args.embed_dim,
                                               'image_size': args.image_size}, 0, {})
    common = ['--bs', args.bs, '--workers', args.workers]
    build, query, results = {}, {}, {}
    for kind in args.index_types:
        index = work / f'index_{kind}'
        seconds = command('build', '--checkpoint', checkpoint, '--images', catalogue, '--index', index,
                          '--index_type', kind, *common)
        metadata = json.loads((index / 'metadata.json').read_text())
        record = metadata['history'][-1]
        build[kind] = {'seconds': seconds, 'images_per_s': args.images / seconds, 'embed_s': record['embed_s'],
                       'index_s': record['index_s'], 'faiss': metadata['index']['factory'],
                       'search_parameters': metadata['index']['search_parameters']}
        out = work / f'hits_{kind}.json'
        seconds = command('query', '--index', index, '--queries', queries, '-k', args.k, '--exclude_self',
                          '--out', out, *common)
        answer = json.loads(out.read_text())
        results[kind] = answer['queries']
        search_s = answer['summary']['timing']['search_s']
        query[kind] = {'seconds': seconds, 'queries_per_s': n_queries / seconds, 'search_s': search_s,
                       'search_queries_per_s': n_queries / max(search_s, 1e-9)}
    recall = {kind: recall_at_k(results[kind], results['flat']) for kind in args.index_types}
    query_paths = [record['query'] for record in results['flat']]
    ratios = {}
    for kind in args.index_types[1:]:
        ratios[f'build_{kind}_over_flat'] = build[kind]['images_per_s'] / build['flat']['images_per_s']
        ratios[f'query_{kind}_over_flat'] = query[kind]['queries_per_s'] / query['flat']['queries_per_s']
        ratios[f'search_{kind}_over_flat'] = (query[kind]['search_queries_per_s']
                                              / query['flat']['search_queries_per_s'])
    return {'arguments': {key: value for key, value in vars(args).items() if key not in ('folder', 'json')},
            'catalogue': {'images': args.images, 'items': args.items, 'queries': n_queries,
                          'generated_s': generated_s},
            'torch_threads': torch.get_num_threads(), 'build': build, 'query': query,
            f'recall@{args.k}': recall, 'ratios': ratios, 'sweep': sweep(work, args.index_types, query_paths, args.k)}


def print_report(report):
    arguments, k = report['arguments'], report['arguments']['k']
    print(f'catalogue: {report["catalogue"]["images"]} generated {arguments["photo_size"]} JPEGs of '
          f'{report["catalogue"]["items"]} items; {report["catalogue"]["queries"]} queries (--exclude_self, -k {k}); '
          f'{arguments["arch"]} at {arguments["image_size"]} px, {arguments["embed_dim"]}-d, --bs {arguments["bs"]}, '
          f'--workers {arguments["workers"]}, {report["torch_threads"]} torch threads')
    for kind, built in report['build'].items():
        searched = report['query'][kind]
        parameters = ', '.join(f'{name} {value}' for name, value in built['search_parameters'].items()) or 'exact'
        print(f'{kind:5s} ({built["faiss"]}, {parameters}): build '
              f'{built["images_per_s"]:.1f} images/s ({built["seconds"]:.1f} s: embedding {built["embed_s"]:.1f} s, '
              f'indexing {built["index_s"]:.2f} s); query {searched["queries_per_s"]:.1f} queries/s '
              f'({searched["seconds"]:.1f} s; search alone {searched["search_queries_per_s"]:.0f} queries/s); '
              f'recall@{k} vs flat = {report[f"recall@{k}"][kind]:.4f}')
    for name, value in report['ratios'].items():
        print(f'{name} = {value:.3f}')
    share = min(built['embed_s'] / built['seconds'] for built in report['build'].values())
    print(f'embedding is at least {100 * share:.1f}% of every build (the same work for every index type): the build '
          f'and query ratios follow the machine\'s load as much as the index; the search alone is the index\'s')
    for kind, settings in report['sweep'].items():
        print(f'{kind} sweep (stored query vectors, one batch): ' + '; '.join(
            f'{setting}: recall@{k} {found["recall"]:.4f}, {found["queries_per_s"]:.0f} queries/s'
            for setting, found in settings.items()))


if __name__ == '__main__':
    main()
