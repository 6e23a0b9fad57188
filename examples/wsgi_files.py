"""A WSGI file download for the benchmark: `GET /10m` sends the 10 MiB file in
$FERROCORN_BENCH_FILES through `wsgi.file_wrapper`, which ferrocorn (and granian,
gunicorn) send with sendfile(2) when they can."""

import os

DIR = os.environ.get("FERROCORN_BENCH_FILES", "/tmp/ferrocorn-bench-files")


def app(environ, start_response):
    path = os.path.join(DIR, "10m.bin")
    f = open(path, "rb")  # noqa: SIM115 (closed by the server through the wrapper)
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    return environ["wsgi.file_wrapper"](f, 65536)
