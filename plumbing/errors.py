"""The one exception type for bad user input, and how entry points report it."""
import gc
import sys
import traceback


class UserError(Exception):
    """A problem with the user's input (path, flag, file): reported as one line, no traceback."""


def exit_with(error, code=2):
    """Print `error` as one line on stderr and exit non-zero."""
    print(f'error: {one_line(error)}', file=sys.stderr)
    sys.exit(code)


def one_line(error):
    return ' '.join(str(error).split())


def exit_code(main):
    """Run a script's main(); its exit code: what main() returned, 2 after a UserError (one line on stderr), 1 after
    any other exception (its traceback on stderr), 130 after a Ctrl-C that aborted.

    Unlike an uncaught exception, which Python keeps (with every frame of main) until the interpreter is gone, the
    exception is released here: DataLoader workers, which ignore SIGTERM to outlive a cluster's, are shut down by
    their loaders then, instead of multiprocessing waiting for them at exit for ever.
    """
    code = _run(main)
    if _child_processes_alive():
        gc.collect()  # a loader in a reference cycle with the failed frames is freed only by the collector
    return code


def _child_processes_alive():
    """Whether processes started by multiprocessing (a loader's workers) are running; the collector, which takes a
    fifth of a second in a large process, is run only then. Never imports multiprocessing itself."""
    multiprocessing = sys.modules.get('multiprocessing')
    return multiprocessing is not None and bool(multiprocessing.active_children())


def _run(main):
    try:
        return main()
    except UserError as error:
        print(f'error: {one_line(error)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except Exception:
        traceback.print_exc()
        return 1
