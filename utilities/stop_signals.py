"""Ctrl-C and SIGTERM (cluster pre-emption) ask the run to stop after the current step."""
import logging
import signal

logger = logging.getLogger(__name__)


class StopSignals:
    """While active, SIGINT/SIGTERM set `requested` instead of killing the process; a second Ctrl-C aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            self.previous[number] = signal.signal(number, self.handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def handle(self, number, frame):
        if self.requested is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(number).name
        logger.warning('%s received: finishing the current step, then saving a resumable checkpoint '
                       '(Ctrl-C again aborts without saving)', self.requested)

    @property
    def exit_code(self):
        return 128 + signal.Signals[self.requested].value if self.requested else 0


def ignore_stop_signals(worker_id):
    """DataLoader worker_init_fn: workers leave SIGINT/SIGTERM to the main process, which stops them after saving.

    A cluster's SIGTERM reaches the whole process group; a worker it killed would crash the step in progress.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
