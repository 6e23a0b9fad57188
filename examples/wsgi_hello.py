"""The smallest WSGI app: `ferrocorn --interface wsgi examples.wsgi_hello:app` answers
"Hello, world!" (13 bytes), as examples/hello.py does over ASGI."""

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
