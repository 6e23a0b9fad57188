"""Unmodified FastAPI and Starlette apps."""

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

fastapi_app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@fastapi_app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@fastapi_app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2)}


async def homepage(request):
    return JSONResponse({"hello": "world", "client": request.client.host})


async def echo(request):
    return PlainTextResponse((await request.body()).decode()[::-1])


starlette_app = Starlette(routes=[Route("/", homepage), Route("/echo", echo, methods=["POST"])])
