"""Pieces the test apps share: the lifespan protocol answered with nothing to do, and a
WebSocket that echoes text until the client leaves."""


async def complete_lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo_text(receive, send) -> None:
    """Accept the WebSocket, then send each message's text back (binary as "")."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})
