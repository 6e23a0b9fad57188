"""A FastAPI app with one JSON endpoint: `ferrocorn examples.fastapi_app:app`, GET /json."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
async def json_endpoint():
    return {"message": "Hello, world!", "items": [1, 2, 3]}
