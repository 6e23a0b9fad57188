"""An app module whose pydantic-settings settings fail validation at import."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    compat_database_url: str
    compat_pool_size: int = 5


settings = Settings()


async def app(scope, receive, send):
    raise AssertionError("never served")
