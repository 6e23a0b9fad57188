"""A WSGI app whose module attaches an access-log filter at import (tests/test_logging.py)."""

from log_app import _attach_filter, wsgi_app

_attach_filter()

__all__ = ["wsgi_app"]
