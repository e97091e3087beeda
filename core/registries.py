"""The registries the config chooses from (see ``core.registry``). Each is filled where its
implementations live:

==================  ==================  ==========================================
registry            config key          implementations register in
==================  ==================  ==========================================
``BACKBONES``       ``model.backbone``  ``models/backbones.py``
``KD_MODES``        ``distill.mode``    ``models/distillation_losses.py``
``INPUT_FORMATS``   ``data.format``     ``core/raw_formats.py``
==================  ==================  ==========================================

The stages register in ``pipeline/stages/`` (only the command line chooses among them).
"""
from core.registry import Registry

BACKBONES = Registry("backbone", "model.backbone")
KD_MODES = Registry("distillation mode", "distill.mode")
INPUT_FORMATS = Registry("input format", "data.format")
