"""Imports deferred to first use, so that a command imports only the libraries it runs (`--help` starts at once).

At the top of a module, after its import block, a heavy dependency is named as a proxy:

    faiss = lazy_module('faiss')                           # imported at the first `faiss.<attribute>`
    sklearn_metrics = lazy_module('sklearn.metrics')       # instead of `from sklearn.metrics import ...`

and used through its attributes at call time: `faiss.Kmeans(...)`, `sklearn_metrics.normalized_mutual_info_score(...)`.
Until then nothing is imported and the module is not in sys.modules; a missing library raises the same ImportError
as `import faiss` would have, at that first use instead of at start-up. A module whose classes subclass a lazy
library's class (`class FoldPruner(optuna.pruners.BasePruner)`) imports that library when it is imported: its users
name it with `lazy_module` in turn. tests/test_layout.py counts `lazy_module('x')` as an import of x.
"""
import importlib


class LazyModule:
    """Stands for the module `name` and imports it at the first attribute read or write (`before_import()`, where
    given, runs just before that import). Attribute writes and deletes, and `__dict__`, are the module's own, so that
    a patch of `proxy.f` (pytest's monkeypatch included) is a patch of the module's `f`, as with the module imported."""

    __slots__ = ('_lazy_name', '_lazy_before_import', '_lazy_module')

    def __init__(self, name, before_import=None):
        object.__setattr__(self, '_lazy_name', name)
        object.__setattr__(self, '_lazy_before_import', before_import)
        object.__setattr__(self, '_lazy_module', None)

    def _lazy_load(self):
        if self._lazy_module is None:
            if self._lazy_before_import is not None:
                self._lazy_before_import()
            object.__setattr__(self, '_lazy_module', importlib.import_module(self._lazy_name))
        return self._lazy_module

    @property
    def __dict__(self):
        return self._lazy_load().__dict__

    def __getattr__(self, attribute):  # only called for what the proxy itself does not have: the module's names
        return getattr(self._lazy_load(), attribute)

    def __setattr__(self, attribute, value):
        setattr(self._lazy_load(), attribute, value)

    def __delattr__(self, attribute):
        delattr(self._lazy_load(), attribute)

    def __dir__(self):
        return dir(self._lazy_load())

    def __repr__(self):
        if self._lazy_module is None:
            return f"<module '{self._lazy_name}' (lazy: not imported yet)>"
        return repr(self._lazy_module)


def lazy_module(name, before_import=None):
    """A stand-in for `import name` that imports the module at its first use (see the module docstring);
    `before_import()` runs once, just before (e.g. choosing matplotlib's backend before pyplot is imported)."""
    return LazyModule(name, before_import)
