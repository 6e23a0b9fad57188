"""Unmodified FastAPI and Starlette apps."""

import httpx

from tests.server import Server


def test_fastapi():
    with Server("frameworks:fastapi_app") as s:
        r = httpx.get(f"{s.url}/items/42?q=x")
        assert r.json() == {"item_id": 42, "q": "x"}
        r = httpx.post(f"{s.url}/items", json={"name": "pen", "price": 2.5})
        assert r.json() == {"name": "pen", "price_with_tax": 3.0}
        assert httpx.get(f"{s.url}/items/notanint").status_code == 422
        assert httpx.get(f"{s.url}/nowhere").status_code == 404
        assert "Application startup complete." in s.stderr_text()


def test_starlette():
    with Server("frameworks:starlette_app") as s:
        assert httpx.get(f"{s.url}/").json() == {"hello": "world", "client": "127.0.0.1"}
        assert httpx.post(f"{s.url}/echo", content=b"abc").text == "cba"
        assert httpx.head(f"{s.url}/").status_code == 200
