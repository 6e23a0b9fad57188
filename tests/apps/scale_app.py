"""For tests/test_scale.py: "ok" to any HTTP request, an echo for WebSockets."""

import app_parts


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await app_parts.echo_text(receive, send)
