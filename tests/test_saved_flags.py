"""A checkpoint's evaluation settings: the flags given, over its config (completed with the flags it predates), over
main.py's defaults; the same rule for Test_pretrained_models.py, Search_Index.py and Export_ONNX.py."""
import logging

import pytest
import torch

import architectures
import parameters
from plumbing.errors import UserError
from run_folder.checkpoint import save_checkpoint
from run_folder.saved_flags import EVALUATION_SETTINGS, config_of, evaluation_settings
from search.embedding import Embedder

DEFAULTS = {name: parameters.build_parser().get_default(name) for name in EVALUATION_SETTINGS}
CONFIG = {'arch': 'resnet18_normalize', 'embed_dim': 64, 'image_size': 256, 'augmentation': 'big',
          'full_decode': False, 'pil_resampling': False, 'lr': 1e-5}


def test_the_config_is_restored_where_nothing_is_given():
    settings, restored = evaluation_settings(CONFIG, {}, DEFAULTS)
    assert settings == {name: CONFIG[name] for name in EVALUATION_SETTINGS}
    assert restored == settings


def test_a_given_flag_beats_the_config_and_is_not_called_restored():
    settings, restored = evaluation_settings(CONFIG, {'image_size': 224, 'full_decode': True}, DEFAULTS)
    assert settings['image_size'] == 224 and settings['full_decode'] is True and settings['augmentation'] == 'big'
    assert 'image_size' not in restored and 'full_decode' not in restored and restored['arch'] == CONFIG['arch']


def test_a_run_saved_before_the_decoding_flags_existed_decodes_as_it_did_then():
    old = {name: value for name, value in CONFIG.items() if name not in ('full_decode', 'pil_resampling')}
    settings, restored = evaluation_settings(old, {}, DEFAULTS)
    assert DEFAULTS['full_decode'] is False and DEFAULTS['pil_resampling'] is False
    assert settings['full_decode'] is True and settings['pil_resampling'] is True
    assert restored['full_decode'] is True


def test_the_authors_files_restore_nothing_and_take_the_defaults_or_the_flags():
    assert config_of({'conv1.weight': 0}) is None and config_of(['not', 'a', 'dict']) is None
    assert config_of({'config': CONFIG, 'state_dict': {}}) is CONFIG
    settings, restored = evaluation_settings(None, {'embed_dim': 512}, DEFAULTS)
    assert restored == {} and settings == {**DEFAULTS, 'embed_dim': 512}


def test_settings_have_the_flag_types_even_when_a_config_holds_strings():
    settings, _ = evaluation_settings({**CONFIG, 'embed_dim': '64', 'image_size': '256'}, {}, DEFAULTS)
    assert settings['embed_dim'] == 64 and settings['image_size'] == 256
    for text, value in (('False', False), ('false', False), ('True', True), ('no', False), ('1', True), (0, False)):
        settings, restored = evaluation_settings({**CONFIG, 'full_decode': text, 'pil_resampling': text}, {},
                                                 DEFAULTS)
        assert settings['full_decode'] is value and settings['pil_resampling'] is value, text
        assert restored['full_decode'] is value, 'what a caller applies is typed too'
    with pytest.raises(UserError, match="config gives full_decode = 'maybe', which is not a value of --full_decode"):
        evaluation_settings({**CONFIG, 'full_decode': 'maybe'}, {}, DEFAULTS)
    with pytest.raises(UserError, match='config gives image_size = .wide.'):
        evaluation_settings({**CONFIG, 'image_size': 'wide'}, {}, DEFAULTS)


def test_a_partial_config_restores_what_it_holds_and_the_rest_is_defaulted_and_logged(tmp_path, caplog):
    partial = {'arch': 'resnet18_normalize', 'embed_dim': 8}
    settings, restored = evaluation_settings(partial, {}, DEFAULTS)
    assert restored == {**partial, 'full_decode': True, 'pil_resampling': True}, 'and what runs did before a flag'
    assert settings['image_size'] == DEFAULTS['image_size'] and settings['augmentation'] == DEFAULTS['augmentation']
    model = architectures.build('resnet18_normalize', 8, pretrained=False)
    save_checkpoint(str(tmp_path / 'partial.pth'), model, partial, 0, {})
    with caplog.at_level(logging.INFO, logger='search.embedding'):
        embedder = Embedder.from_checkpoint(str(tmp_path / 'partial.pth'), {'image_size': 32}, DEFAULTS, 'cpu')
    assert embedder.settings['image_size'] == 32 and embedder.settings['arch'] == 'resnet18_normalize'
    (line,) = [record.getMessage() for record in caplog.records if 'records no' in record.getMessage()]
    assert line.endswith('records no augmentation: using --augmentation base'), line
    assert torch.equal(embedder.model.state_dict()['model.last_linear.weight'],
                       model.state_dict()['model.last_linear.weight'])
