"""Time the start-up of the entry points in two checkouts (e.g. before and after a change), runs interleaved, and
show where `python -X importtime` says `main.py --help` spends its imports in each.

    git worktree add --detach /tmp/before <commit>
    python benchmarks/startup_time.py /tmp/before . [--runs 10] [--json FILE]

Each command runs `--runs` times in each checkout, alternately (before, after, before, ...), with this Python, so that
a change of the machine's load hits both alike; the table gives the median and the fastest run in seconds and the
ratio of the medians (after / before). The load average before and after the runs is printed: time on an idle
machine (docs/performance.md, "Start-up", has the numbers). The import table sums the self time of every module of a
package (torch._dynamo, which torchvision's import pulls in, apart from the rest of torch); its last row, all imports,
is the sum of the medians.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    'main.py --help': ['main.py', '--help'],
    'main.py --dataset digits --dry_run': ['main.py', '--dataset', 'digits', '--dry_run'],
    'Search_Index.py --help': ['Search_Index.py', '--help'],
    'Hyperparameter_Search.py --help': ['Hyperparameter_Search.py', '--help'],
}
IMPORT_LINE = re.compile(r'^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)')


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('before', help='The checkout timed first (e.g. a worktree of the base commit).')
    parser.add_argument('after', help='The checkout compared with it.')
    parser.add_argument('--runs', type=int, default=10, help='Runs of each command in each checkout (default 10).')
    parser.add_argument('--commands', nargs='+', choices=list(COMMANDS), default=list(COMMANDS),
                        help='The commands timed (default: all).')
    parser.add_argument('--import_runs', type=int, default=3,
                        help='`-X importtime` runs of main.py --help per checkout, interleaved; the table gives each '
                             'package\'s median (default 3).')
    parser.add_argument('--top', type=int, default=8, help='Packages shown in the import table (default 8).')
    parser.add_argument('--json', default=None, help='Also write the timings and import sums as JSON here.')
    return parser.parse_args(argv)


def run(checkout, arguments, cache, importtime=False):
    """(wall-clock seconds, stderr) of `python [-X importtime] arguments` in `checkout`; a failure is an error."""
    command = [sys.executable, *(['-X', 'importtime'] if importtime else []), *arguments]
    environment = {**os.environ, 'XDG_CACHE_HOME': cache, 'WANDB_MODE': 'disabled'}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=checkout, env=environment, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f'{" ".join(arguments)} failed in {checkout} (exit {result.returncode}): '
                         f'{result.stderr.strip()[-500:]}')
    return elapsed, result.stderr


def import_sums(stderr):
    """{package: seconds} from -X importtime output: the self time of every module summed per top-level package."""
    sums = {}
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            name = match.group(4)
            package = 'torch._dynamo' if name.startswith('torch._dynamo') else name.split('.')[0]
            sums[package] = sums.get(package, 0.0) + int(match.group(1)) / 1e6
    return sums


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    checkouts = {'before': os.path.abspath(args.before), 'after': os.path.abspath(args.after)}
    times = {name: {side: [] for side in checkouts} for name in args.commands}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as cache:
        for name in args.commands:  # one run each first, not timed: the files in the page cache for every run
            for checkout in checkouts.values():
                run(checkout, COMMANDS[name], cache)
        for _ in range(args.runs):
            for name in args.commands:
                for side, checkout in checkouts.items():
                    times[name][side].append(run(checkout, COMMANDS[name], cache)[0])
        sums = {side: [] for side in checkouts}
        for _ in range(args.import_runs):
            for side, checkout in checkouts.items():
                sums[side].append(import_sums(run(checkout, COMMANDS['main.py --help'], cache, importtime=True)[1]))
    imports = {side: {package: statistics.median(runs.get(package, 0.0) for runs in sums[side])
                      for package in set().union(*sums[side])} for side in checkouts}
    load_after = os.getloadavg()

    print(f'{args.runs} interleaved runs per command and checkout; load average (1, 5, 15 min) '
          f'{" ".join(f"{v:.2f}" for v in load_before)} before, {" ".join(f"{v:.2f}" for v in load_after)} after')
    print(f'before: {checkouts["before"]}\nafter:  {checkouts["after"]}\n')
    print('| command | before median (min) s | after median (min) s | after / before |\n|---|---|---|---|')
    summary = {}
    for name in args.commands:
        before, after = times[name]['before'], times[name]['after']
        ratio = statistics.median(after) / statistics.median(before)
        summary[name] = {'before_s': before, 'after_s': after, 'ratio_of_medians': ratio}
        print(f'| `python {name}` | {statistics.median(before):.2f} ({min(before):.2f}) | '
              f'{statistics.median(after):.2f} ({min(after):.2f}) | {ratio:.2f} |')
    print(f'\n`python -X importtime main.py --help`: self time summed per package, s, median of {args.import_runs} '
          f'runs (the top {args.top})\n')
    shown = sorted(set().union(*imports.values()), key=lambda package: -max(side.get(package, 0.0)
                                                                            for side in imports.values()))[:args.top]
    print('| package | before | after |\n|---|---|---|')
    for package in shown:
        print(f'| {package} | {imports["before"].get(package, 0.0):.2f} | {imports["after"].get(package, 0.0):.2f} |')
    print(f'| all imports | {sum(imports["before"].values()):.2f} | {sum(imports["after"].values()):.2f} |')
    report = {'checkouts': checkouts, 'runs': args.runs, 'load_before': load_before, 'load_after': load_after,
              'timings': summary, 'import_sums_s': imports}
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump(report, stream, indent=2)
    return report


if __name__ == '__main__':
    main()
