"""Starlette FileResponse for the file-serving benchmark (bench/files.py): `GET /1m`
and `GET /100m` serve the files of that size in $FERROCORN_BENCH_FILES. A server that
offers the ASGI pathsend extension (ferrocorn, granian) gets the path and sends the file
itself; any other gets it read and sent in chunks by Starlette."""

import os

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

DIR = os.environ.get("FERROCORN_BENCH_FILES", "/tmp/ferrocorn-bench-files")


async def one_mib(request):
    return FileResponse(os.path.join(DIR, "1m.bin"))


async def hundred_mib(request):
    return FileResponse(os.path.join(DIR, "100m.bin"))


app = Starlette(routes=[Route("/1m", one_mib), Route("/100m", hundred_mib)])
