"""An app module that fails while being imported."""

import json  # noqa: F401

value = undefined_name  # noqa: F821
