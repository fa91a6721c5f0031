"""The tree shows the architecture: packages import only the layers below them, every module says what it is for,
and the options are not written after parsing (derived values travel as values)."""
import ast
import os

import pytest

from runs import ROOT

LAYERS = (
    ('plumbing',),
    ('datasets', 'datasampler', 'criteria'),
    ('architectures',),
    ('evaluation',),
    ('engine',),
    ('run_folder',),
    ('reporting',),
    ('search', 'tuning'),
    ('utilities',),
    ('parameters',),
)
"""From the bottom up: a module imports its own package and the layers below it, never one above. The entry points
(the top-level scripts: main.py, Test_pretrained_models.py, ...) stand above them all."""
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}
ENTRY_POINTS = sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith('.py') and name[:-3] not in LAYER_OF)


def project_modules():
    """(top-level name, path) of every module of the packages and of the top-level scripts."""
    modules = [(name, os.path.join(ROOT, name + '.py')) for name in [*ENTRY_POINTS, 'parameters']]
    for package in LAYER_OF:
        folder = os.path.join(ROOT, package)
        if os.path.isdir(folder):
            modules += [(package, os.path.join(folder, file)) for file in sorted(os.listdir(folder))
                        if file.endswith('.py')]
    return modules


def imported_top_levels(path):
    """The top-level names of every module `path` imports, at any depth of its code, a lazy_module('x') (an import
    deferred to first use, plumbing/lazy.py) included."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'lazy_module'
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value.split('.')[0])
    return names


def test_the_layers_cover_every_package_of_the_tree():
    packages = {name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name, '__init__.py'))}
    assert packages - {'tests'} == set(LAYER_OF) - {'parameters'}
    assert {'main', 'Test_pretrained_models', 'Result_Evaluations', 'Input_Baseline', 'Hyperparameter_Search',
            'Search_Index', 'Export_ONNX'} <= set(ENTRY_POINTS)


def test_packages_hold_source_code_only():
    """No run output (a study folder, logs, plots) inside a package, where a search with --save_path . once put one."""
    others = [os.path.relpath(os.path.join(folder, name), ROOT) for package in LAYER_OF
              for folder, subfolders, files in os.walk(os.path.join(ROOT, package))
              if '__pycache__' not in folder for name in files if not name.endswith('.py')]
    assert others == []


MODULES = project_modules()
MODULE_IDS = [os.path.relpath(path, ROOT) for _, path in MODULES]


@pytest.mark.parametrize('name, path', MODULES, ids=MODULE_IDS)
def test_no_module_imports_a_layer_above_its_own(name, path):
    if name in ENTRY_POINTS:
        assert not imported_top_levels(path) & set(ENTRY_POINTS) - {name}, 'an entry point imports another'
        return
    upward = sorted(other for other in imported_top_levels(path) & (set(LAYER_OF) | set(ENTRY_POINTS))
                    if other != name and LAYER_OF.get(other, len(LAYERS)) >= LAYER_OF[name])
    assert not upward, f'{os.path.relpath(path, ROOT)} ({name}) imports {upward}, which are not below it'


@pytest.mark.parametrize('name, path', MODULES, ids=MODULE_IDS)
def test_every_module_begins_by_saying_what_it_is_for(name, path):
    docstring = ast.get_docstring(ast.parse(open(path, encoding='utf-8').read()))
    assert docstring and docstring.splitlines()[0].strip(), f'{os.path.relpath(path, ROOT)} has no docstring'


def option_writes(path):
    """(line, code) of every assignment to an attribute of `opt` (opt.x = ..., opt.x += ...) or setattr(opt, ...)."""
    writes = []
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == 'opt':
                writes.append((node.lineno, ast.unparse(node)))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'setattr'
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == 'opt'):
            writes.append((node.lineno, ast.unparse(node)))
    return writes


def test_options_are_written_only_while_parsing():
    writes = {os.path.relpath(path, ROOT): option_writes(path) for name, path in MODULES if name != 'parameters'}
    assert {path: found for path, found in writes.items() if found} == {}
    assert option_writes(os.path.join(ROOT, 'parameters.py')), 'the check finds the writes parameters.py makes'
