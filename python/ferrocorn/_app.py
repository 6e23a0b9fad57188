"""Importing the user's application from a "module:attribute" string."""

from __future__ import annotations

import importlib
import sys
from typing import Any


class AppLoadError(Exception):
    """The app string can't be turned into an application; the message is one line."""


def load_app(app_string: str, app_dir: str, factory: bool) -> Any:
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    module_name, sep, attrs = app_string.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(
            f'Import string "{app_string}" must be in format "<module>:<attribute>".'
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # A module the app imports is missing: report that one.
        raise AppLoadError(
            f'Error loading ASGI app. Could not import module "{module_name}".'
        ) from None
    app = module
    try:
        for attr in attrs.split("."):
            app = getattr(app, attr)
    except AttributeError:
        raise AppLoadError(
            f'Error loading ASGI app. Attribute "{attrs}" not found in module "{module_name}".'
        ) from None
    if factory:
        try:
            app = app()
        except TypeError as exc:
            raise AppLoadError(f"Error loading ASGI app factory: {exc}") from None
    if not callable(app):
        raise AppLoadError(f'Error loading ASGI app. "{app_string}" is not callable.')
    return app
