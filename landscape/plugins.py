"""User code named in a config: ``module:Name`` or ``path/to/file.py:Name``.

A file is executed as a module named ``_landscape_user_<hash>`` (the prefix tells Ray's runner to
ship it by value, so workers need no copy of the file). Loading a user module runs its code: give
only files you trust.

Example::

    >>> cls = import_object("examples/bit_depth.py:BitDepthReduction", "defenses")
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from .errors import LandscapeError

#: the module-name prefix of files loaded by path (``ray_jobs.runner`` sends these by value)
USER_MODULE_PREFIX = "_landscape_user_"


class PluginError(LandscapeError, ValueError):
    pass


def is_object_spec(spec) -> bool:
    """Does ``spec`` name user code (``module:Name`` or ``file.py:Name``)?"""
    return isinstance(spec, str) and ":" in spec and bool(spec.rpartition(":")[0]) and bool(spec.rpartition(":")[2])


def import_object(spec: str, key: str, error: type[Exception] = PluginError):
    """The object ``spec`` names; ``key`` (the config key it came from) goes into every error message."""
    target, _, attr = str(spec).rpartition(":")
    if not target or not attr:
        raise error(f"{key}={spec!r}: expected 'module:Name' or 'path/to/file.py:Name'")
    if target.endswith(".py"):
        path = Path(os.path.expanduser(target))
        if not path.is_file():
            raise error(f"{key}={spec!r}: file {path} not found")
        mod_name = f"{USER_MODULE_PREFIX}{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(mod_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[mod_name]
                raise error(f"{key}={spec!r}: running {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise error(f"{key}={spec!r}: cannot import {target!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise error(f"{key}={spec!r}: {target!r} has no attribute {attr!r}") from None
