"""Importing the code a config names (``model.target``, ``dataset.target``), in Hydra's ``_target_``
spirit: ``module.path:name`` or ``module.path.name``. The current folder is searched first, as
``python -m`` does, so a module beside the command line is found. Whether a run's saved config may
import anything at all is decided by ``maml_cli.run.reader.open_run`` (``trust_code``)."""

from __future__ import annotations

import importlib
import os
import sys

from maml_cli.errors import UserError


def import_target(target: str, key: str):
    """The object ``target`` names; a UserError saying what went wrong otherwise."""
    text = str(target)
    module_name, sep, attribute = text.partition(":")
    if not sep:
        module_name, _, attribute = text.rpartition(".")
    if not module_name or not attribute:
        raise UserError(f"{key}={text} is not module.path:name")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(
            f"{key}={text}: cannot import {module_name} ({e}); run from the folder that holds it or install it"
        ) from None
    except Exception as e:  # the module itself failed while loading
        raise UserError(f"{key}={text}: importing {module_name} failed: {type(e).__name__}: {e}") from None
    try:
        obj = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise UserError(f"{key}={text}: {module_name} has no {attribute}") from None
    if not callable(obj):
        raise UserError(f"{key}={text} is not callable")
    return obj
