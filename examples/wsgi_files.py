"""A WSGI file download for the benchmark: `GET /10m` sends a 10 MiB file through
`wsgi.file_wrapper`, which ferrocorn and gunicorn send with sendfile(2) when they can;
a server without `wsgi.file_wrapper` (granian 2.8) gets wsgiref's, which it iterates
in 64 KiB blocks. The file (a repeating 0..255 pattern, so the benchmark can check the
answer) is made in $FERROCORN_BENCH_FILES at import when missing."""

import os
import tempfile
from wsgiref.util import FileWrapper

DIR = os.environ.get("FERROCORN_BENCH_FILES", tempfile.gettempdir())
PATH = os.path.join(DIR, "ferrocorn-wsgi-10m.bin")
SIZE = 10 << 20

if not os.path.exists(PATH) or os.path.getsize(PATH) != SIZE:
    with open(PATH + ".tmp", "wb") as out:
        out.write(bytes(range(256)) * (SIZE // 256))
    os.replace(PATH + ".tmp", PATH)


def app(environ, start_response):
    f = open(PATH, "rb")  # noqa: SIM115 (closed by the server through the wrapper)
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]
    )
    return environ.get("wsgi.file_wrapper", FileWrapper)(f, 65536)
