"""Apps that raise: in a request before its first await, raw and under FastAPI."""

from fastapi import FastAPI

TENANTS = {"acme": 1}


def tenant_id(scope) -> int:
    name = scope["path"].strip("/")
    if name not in TENANTS:
        raise LookupError(f"no such tenant: {name}")  # the raising line
    return TENANTS[name]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    tenant = tenant_id(scope)  # raises before the request awaits anything
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(tenant).encode()})


fastapi_app = FastAPI()


@fastapi_app.get("/orders/{order_id}")
async def order(order_id: int):
    return {"total": 100 / (order_id - order_id)}  # ZeroDivisionError, no await before
