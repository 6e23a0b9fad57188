"""An app module that reads a required setting from the environment at import."""

import os

SECRET_KEY = os.environ["APP_SECRET_KEY"]


async def app(scope, receive, send):
    raise AssertionError("never served")
