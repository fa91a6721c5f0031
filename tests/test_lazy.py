"""plumbing.lazy: a lazy_module stands for its module and imports it once, at the first use; a missing module fails
there as `import` would have; patches through the proxy reach the module."""
import importlib
import sys
import textwrap

import pytest

from plumbing.lazy import lazy_module


@pytest.fixture
def fresh_module(tmp_path, monkeypatch):
    """A module of a temporary package, never imported yet: (its name, a list that gets one entry per import)."""
    package = tmp_path / 'lazy_probe_package'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'probe.py').write_text(textwrap.dedent('''\
        import builtins
        builtins.lazy_probe_imports.append(__name__)
        VALUE = 42

        def twice(x):
            return 2 * x


        class Base:
            pass
        '''))
    imports = []
    monkeypatch.setattr('builtins.lazy_probe_imports', imports, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield 'lazy_probe_package.probe', imports
    for name in ('lazy_probe_package.probe', 'lazy_probe_package'):
        sys.modules.pop(name, None)


def test_nothing_is_imported_until_an_attribute_is_used(fresh_module):
    name, imports = fresh_module
    probe = lazy_module(name)
    assert imports == [] and name not in sys.modules
    assert 'not imported yet' in repr(probe)
    assert probe.VALUE == 42
    assert imports == [name] and sys.modules[name].VALUE == 42
    assert repr(probe) == repr(sys.modules[name])


def test_the_module_is_imported_once_and_its_attributes_are_the_modules_own(fresh_module):
    name, imports = fresh_module
    probe = lazy_module(name)
    assert probe.twice(4) == 8 and probe.twice(5) == 10 and probe.VALUE == 42
    assert imports == [name]
    module = importlib.import_module(name)
    assert probe.twice is module.twice and probe.Base is module.Base
    assert isinstance(module.Base(), probe.Base)  # a class read through the proxy is the class itself
    assert 'twice' in dir(probe)
    assert not hasattr(probe, 'VALUE_2')


def test_two_proxies_of_one_module_share_the_import(fresh_module):
    name, imports = fresh_module
    first, second = lazy_module(name), lazy_module(name)
    assert first.VALUE == second.VALUE == 42
    assert imports == [name]


def test_an_attribute_set_or_deleted_through_the_proxy_is_set_or_deleted_on_the_module(fresh_module, monkeypatch):
    """As with the module imported: monkeypatch.setattr(clustering.faiss, ...) patches faiss itself."""
    name, _ = fresh_module
    probe = lazy_module(name)
    monkeypatch.setattr(probe, 'twice', lambda x: -x)
    module = sys.modules[name]
    assert module.twice(3) == -3 and probe.twice(3) == -3
    monkeypatch.undo()
    assert module.twice(3) == 6
    probe.EXTRA = 'set'
    assert module.EXTRA == 'set'
    del probe.EXTRA
    assert not hasattr(module, 'EXTRA')


def test_before_import_runs_once_just_before_the_import(fresh_module):
    name, imports = fresh_module
    calls = []
    probe = lazy_module(name, before_import=lambda: calls.append(list(imports)))
    assert calls == []
    assert probe.VALUE == 42 and probe.twice(1) == 2
    assert calls == [[]] and imports == [name]  # it ran once, before the module's code


def capture(action):
    with pytest.raises(ImportError) as caught:
        action()
    return caught.value


@pytest.mark.parametrize('name', ['no_such_module_obd_sd', 'no_such_module_obd_sd.sub', 'plumbing.no_such_module'])
def test_a_missing_module_raises_at_the_first_use_the_error_import_would_have_raised(name):
    proxy = lazy_module(name)  # no error yet: a command that never uses it runs without it
    lazy_error = capture(lambda: proxy.anything)
    import_error = capture(lambda: importlib.import_module(name))
    assert type(lazy_error) is type(import_error) is ModuleNotFoundError
    assert str(lazy_error) == str(import_error) and lazy_error.name == import_error.name
    assert str(capture(lambda: proxy.anything)) == str(import_error)  # and again at the next use, as import would


def test_code_that_caught_a_missing_optional_library_still_gives_its_answer(monkeypatch, tmp_path):
    """Where the code caught the ImportError of an optional library at its import, it catches it at the first use:
    the same answer or one-line error as before (the library made missing here by a proxy of a module that does not
    exist)."""
    from architectures import weights
    from plumbing.errors import UserError
    from run_folder import record

    monkeypatch.setattr(record, 'faiss', lazy_module('no_such_module_obd_sd'))
    assert record.library_versions()['faiss'] is None
    monkeypatch.setattr(weights, 'safetensors_torch', lazy_module('no_such_module_obd_sd'))
    path = tmp_path / 'backbone.safetensors'
    path.write_bytes(b'')
    with pytest.raises(UserError, match=r'is not a loadable weights file \(ModuleNotFoundError\)'):
        weights.read_weights_file(str(path))
