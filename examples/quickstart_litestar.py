from litestar import Litestar, get


@get("/")
async def index() -> dict[str, str]:
    return {"message": "Hello from Litestar"}


@get("/items/{item_id:int}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, int | str | None]:
    return {"item_id": item_id, "q": q}


app = Litestar(route_handlers=[index, read_item])
