"""Access to ../shared/fixtures/authors_checkpoint.py (the authors' checkpoint layout and their embeddings)."""
import importlib.util
import os

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'fixtures')


def authors_checkpoint_module():
    spec = importlib.util.spec_from_file_location('authors_checkpoint', os.path.join(FIXTURES, 'authors_checkpoint.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
