"""One training run of a search trial: main.py (or a torchrun launch of it) in a process of its own, watched
through the summary.json it rewrites after every epoch, stopped with SIGTERM when the pruner says so."""
import json
import os
import signal
import subprocess
import sys
import time

POLL_S = 1.0
"""How often the run's summary.json is read."""
STOP_GRACE_S = 120
"""How long a stopped run may take to save its checkpoint and exit before it is killed."""


class RunFailed(Exception):
    """The run ended with an error (its output file has the details)."""


class RunStopped(Exception):
    """The run was stopped before its end: pruned, or the search itself was asked to stop."""


def read_history(folder):
    """The epochs a run folder's summary.json records so far ([] before its first epoch or mid-write)."""
    try:
        with open(os.path.join(folder, 'summary.json'), encoding='utf-8') as stream:
            return json.load(stream).get('history', [])
    except (OSError, ValueError):
        return []


def last_error(output_path):
    """The last non-empty line of a run's output file: its one-line error, or the end of its traceback."""
    try:
        with open(output_path, encoding='utf-8', errors='replace') as stream:
            lines = [line.strip() for line in stream if line.strip()]
    except OSError:
        return 'no output'
    return lines[-1] if lines else 'no output'


def run_watched(command, folder, output_path, on_epoch, should_stop):
    """Run `command` (its output into `output_path`) in this process's working folder, so that the relative paths of
    a base run (--source data/cub200) mean what they meant to the search's checks, until it ends; call
    `on_epoch(entry)` for every epoch its run folder `folder` records; stop it (SIGTERM, then a resumable
    checkpoint, as for a cluster's pre-emption) as soon as `on_epoch` or `should_stop()` returns True. Returns the
    history; RunStopped when stopped, RunFailed when the run failed."""
    seen, stopping = 0, False
    with open(output_path, 'ab') as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while process.poll() is None:
                time.sleep(POLL_S)
                history = read_history(folder)
                for entry in history[seen:]:
                    stopping = on_epoch(entry) or stopping
                seen = len(history)
                if not stopping and should_stop():
                    stopping = True
                if stopping:
                    stop(process)
                    raise RunStopped()
        except BaseException:
            stop(process)
            raise
    history = read_history(folder)
    for entry in history[seen:]:
        on_epoch(entry)
    if process.returncode != 0:
        raise RunFailed(f'{command_name(command)} exited {process.returncode}: {last_error(output_path)}')
    return history


def stop(process):
    """SIGTERM `process` (a run saves a resumable checkpoint and exits), SIGKILL it after STOP_GRACE_S."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def command_name(command):
    return 'main.py' if command[0] == sys.executable else os.path.basename(command[0])
