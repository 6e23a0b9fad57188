"""Echoes what the server resolved about the client (tests/test_proxy.py): a JSON body
with the scope's `client`, `scheme` and `host` header, for http and websocket scopes.
A WebSocket sends the same JSON as its one text message, then closes."""

import json


def facts(scope) -> bytes:
    hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
    client = scope.get("client")
    return json.dumps(
        {
            "client": list(client) if client is not None else None,
            "scheme": scope["scheme"],
            "host": hosts[0] if len(hosts) == 1 else hosts or None,
            "http_version": scope["http_version"],
        }
    ).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": facts(scope).decode()})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = facts(scope)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
