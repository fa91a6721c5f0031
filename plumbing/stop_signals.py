"""Ctrl-C and SIGTERM (cluster pre-emption) ask the run to stop after the current step."""
import logging
import signal

from plumbing.lazy import lazy_module

distributed = lazy_module('plumbing.distributed')  # torch: for the ranks of a torchrun run to agree on a stop

logger = logging.getLogger(__name__)


class CaughtSignals:
    """While active (in a `with` block), SIGINT/SIGTERM are recorded in `received` (the signal's name) instead of
    killing the process, and `announce()` says what happens now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            self.previous[number] = signal.signal(number, self.handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def handle(self, number, frame):
        self.received = signal.Signals(number).name
        self.announce()

    def announce(self):
        raise NotImplementedError


class StopSignals(CaughtSignals):
    """A run's stop signals: the run stops after the current step and saves; a second Ctrl-C aborts.

    `received` is what this process got; `requested` is the stop every process agreed on at the last `agree()`,
    the value that decisions read (under torchrun a signal to any rank stops all ranks at the same step).
    """

    def __init__(self):
        super().__init__()
        self.requested = None

    def handle(self, number, frame):
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        super().handle(number, frame)

    def announce(self):
        logger.warning('%s received: finishing the current step, then saving a resumable checkpoint '
                       '(Ctrl-C again aborts without saving)', self.received)

    def agree(self):
        """Whether any process received a stop signal (a collective under torchrun: call it at the same point on
        every rank); `requested` becomes that signal's name on every rank."""
        number = distributed.largest_over_ranks(signal.Signals[self.received].value if self.received else 0)
        if number:
            self.requested = signal.Signals(number).name
        return self.requested is not None

    @property
    def exit_code(self):
        return 128 + signal.Signals[self.requested].value if self.requested else 0


def ignore_stop_signals(worker_id):
    """DataLoader worker_init_fn: workers leave SIGINT/SIGTERM to the main process, which stops them after saving.

    A cluster's SIGTERM reaches the whole process group; a worker it killed would crash the step in progress.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
