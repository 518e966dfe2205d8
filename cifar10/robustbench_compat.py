"""Make ``robustbench`` 1.1.1 importable with today's PyPI packages; the one place that does so.

robustbench 1.1.1 imports two modules that its declared dependencies no longer provide:

* ``autoattack`` -- the original AutoAttack (Croce & Hein 2020) is published on PyPI as
  ``pyautoattack``, whose import name is ``pyautoattack``. We alias it (and its submodules)
  as ``autoattack`` in ``sys.modules`` when no real ``autoattack`` is installed.
* ``pkg_resources`` -- removed from setuptools 81. robustbench only calls
  ``pkg_resources.resource_filename(package, path)``; when the import fails we register a
  minimal stand-in implementing exactly that with ``importlib.resources``.

Call :func:`import_robustbench` instead of ``import robustbench``.
"""
from __future__ import annotations

import importlib
import sys
import types


def _alias_autoattack() -> None:
    try:
        importlib.import_module("autoattack")
        return
    except ImportError:
        pass
    pkg = importlib.import_module("pyautoattack")
    sys.modules["autoattack"] = pkg
    for sub in ("autoattack", "autopgd_base", "fab_pt", "square", "state", "checks", "other_utils"):
        try:
            sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")
        except ImportError:
            pass


def _resource_filename(package: str, resource: str) -> str:
    from importlib.resources import files

    return str(files(package).joinpath(resource))


def _ensure_pkg_resources() -> None:
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.__doc__ = "Minimal stand-in registered by cifar10.robustbench_compat (resource_filename only)."
        shim.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = shim


def import_robustbench():
    """Return the ``robustbench`` module, installing the two shims above first if needed."""
    _alias_autoattack()
    _ensure_pkg_resources()
    return importlib.import_module("robustbench")
