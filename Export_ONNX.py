"""Export a checkpoint's embedding network to ONNX, and check onnxruntime's embeddings against PyTorch's.

    python Export_ONNX.py --checkpoint run/best_e_recall@1.pth --onnx model.onnx --images catalogue/
    python Export_ONNX.py --checkpoint Training_Results/Recall/OBDSD_d128/cub200/net.pth \
        --arch resnet50_normalize_frozen --embed_dim 128 --onnx obdsd.onnx --images $datapath/cub200/images

The graph takes `images`, B x 3 x S x S (any B) RGB crops of the evaluation pipeline, uint8 (default) or float32 in
0..1 (--input float), normalises them inside and gives `embeddings` (B x embed_dim). The file is written only after
the parity check on --images passes: cosine similarity of onnxruntime's and PyTorch's embedding of each image at
least 0.9999. Needs onnx and onnxruntime (requirements-onnx.txt). The reference: docs/search.md.
"""
import logging
import os
import sys

import parameters
from datasets.transforms import normalisation_of, resize_size
from plumbing.errors import UserError, exit_code
from reporting.logs import setup_logging
from search import onnx_export
from search.catalogue import read_catalogue
from run_folder.saved_flags import EVALUATION_SETTINGS
from search.embedding import Embedder

logger = logging.getLogger('Export_ONNX')
PARITY_IMAGES = 32


def build_parser():
    parser = parameters.OneLineArgumentParser(prog='Export_ONNX.py', description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', required=True, type=os.path.expanduser,
                        help='A checkpoint of main.py, or the authors\' net.pth (then give --arch and --embed_dim).')
    parser.add_argument('--onnx', required=True, type=os.path.expanduser, metavar='FILE.onnx',
                        help='The ONNX file to write.')
    parser.add_argument('--images', required=True, type=os.path.expanduser, metavar='IMAGE|DIR|CSV',
                        help='Real images for the parity check (an image, a folder or a CSV list).')
    parser.add_argument('--parity_images', type=int, default=PARITY_IMAGES,
                        help='How many of --images the parity check embeds (the first ones).')
    parser.add_argument('--input', default='uint8', choices=onnx_export.INPUT_KINDS,
                        help='The graph\'s input: uint8 0..255 (the pipeline\'s crops) or float32 0..1.')
    parser.add_argument('--opset', type=int, default=onnx_export.DEFAULT_OPSET, help='The ONNX opset.')
    parser.add_argument('--exporter', default='torchscript', choices=onnx_export.EXPORTERS,
                        help='torch.onnx\'s TorchScript exporter (needs onnx), or its torch.export-based one '
                             '(dynamo; needs onnxscript too).')
    parser.add_argument('--bs', type=int, default=8, help='Batch size of the parity check.')
    group = parser.add_argument_group('embedding settings, for a checkpoint without a config (the authors\' '
                                      'net.pth); a flag given here overrides the config')
    parameters.add_setting_overrides(group, EVALUATION_SETTINGS)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = build_parser().parse_args(argv)
    setup_logging()
    if opt.parity_images < 1 or opt.bs < 1:
        raise UserError('--parity_images and --bs must be at least 1')
    missing = onnx_export.missing_packages(opt.exporter)
    if missing:
        raise UserError(f'the ONNX export needs {" and ".join(missing)}, which are not installed: pip install '
                        f'{" ".join(missing)} (or pip install -r requirements-onnx.txt)')
    folder = os.path.dirname(os.path.abspath(opt.onnx))
    if not os.path.isdir(folder):
        raise UserError(f'--onnx {opt.onnx}: the folder {folder} does not exist; create it first')
    images = read_catalogue(opt.images, flag='--images')
    given, defaults = parameters.setting_overrides(opt, EVALUATION_SETTINGS)
    embedder = Embedder.from_checkpoint(opt.checkpoint, given, defaults, 'cpu')
    batches = parity_batches(embedder, images.paths, opt.parity_images, opt.bs)
    settings = embedder.settings
    mean, std = normalisation_of(embedder.model)
    metadata = {'checkpoint_sha256': embedder.checkpoint['sha256'], 'input': opt.input,
                **{name: settings[name] for name in EVALUATION_SETTINGS}, 'crop': crop_size(settings),
                'resize': resize_size(settings['image_size']), 'input_mean': ','.join(map(str, mean)),
                'input_std': ','.join(map(str, std))}
    with onnx_export.temporary_beside(opt.onnx) as temporary:
        onnx_export.export(embedder.model, temporary, input_kind=opt.input, image_size=crop_size(settings),
                           opset=opt.opset, exporter=opt.exporter, metadata=metadata)
        result = onnx_export.parity(temporary, embedder.model, batches, opt.input)
        passed = result['min_cosine'] >= onnx_export.PARITY_COSINE and \
            result['single_image_cosine'] >= onnx_export.PARITY_COSINE
        print(f'ONNX parity on {result["images"]} images of {images.source} (batch sizes '
              f'{", ".join(map(str, result["batch_sizes"]))}): cosine min {result["min_cosine"]:.7f} (1 - min = '
              f'{1 - result["min_cosine"]:.1e}), mean '
              f'{result["mean_cosine"]:.7f}, single image {result["single_image_cosine"]:.7f}; largest difference '
              f'{result["max_abs_difference"]:.2e} -> {"pass" if passed else "FAIL"} (>= {onnx_export.PARITY_COSINE})')
        if not passed:
            print(f'error: onnxruntime\'s embeddings differ from PyTorch\'s; {opt.onnx} was not written',
                  file=sys.stderr)
            return 1
        onnx_export.publish(temporary, opt.onnx)
    print(f'wrote {opt.onnx}: {settings["arch"]}, input "images" {opt.input} B x 3 x {crop_size(settings)} x '
          f'{crop_size(settings)}, output "embeddings" B x {settings["embed_dim"]}')
    return 0


def crop_size(settings):
    """The side of the evaluation pipeline's crops: --image_size, or the resize size for `big`."""
    return resize_size(settings['image_size']) if settings['augmentation'] == 'big' else settings['image_size']


def parity_batches(embedder, paths, count, batch_size):
    """uint8 batches of the first `count` readable images of `paths`, through the checkpoint's evaluation
    pipeline."""
    batches, taken = [], 0
    for _, images, failed in embedder.loader(paths[:max(count * 2, count + 8)], batch_size, 0):
        for position, reason in failed:
            logger.warning('cannot read image %s (%s); leaving it out of the parity check', paths[position], reason)
        if images is None:
            continue
        images = images[:count - taken]
        batches.append(images)
        taken += len(images)
        if taken >= count:
            break
    if not batches:
        raise UserError('none of the first --images can be read, so there is nothing to check the export on')
    return batches


if __name__ == '__main__':
    sys.exit(exit_code(main))
