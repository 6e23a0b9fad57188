"""A Flask app for tests/test_wsgi.py (served with --interface wsgi or auto)."""

import hashlib
import os
import time
from wsgiref.validate import validator

from flask import Flask, Response, jsonify, request, send_file, stream_with_context

flask_app = Flask(__name__)
DATA_FILE = os.path.join(os.path.dirname(__file__), "wsgi_flask.py")


@flask_app.get("/")
def index():
    return "Hello from Flask"


@flask_app.get("/json/<name>")
def greet(name):
    return jsonify(hello=name, args=request.args.to_dict())


@flask_app.post("/form")
def form():
    return jsonify(name=request.form["name"], n=int(request.form["n"]) + 1)


@flask_app.get("/stream")
def stream():
    def generate():
        for i in range(5):
            time.sleep(0.01)
            yield f"line {i}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")


@flask_app.get("/file")
def file():
    return send_file(request.args.get("path", DATA_FILE), mimetype="application/octet-stream")


@flask_app.post("/upload")
def upload():
    digest = hashlib.sha256()
    total = 0
    while True:
        piece = request.stream.read(65536)
        if not piece:
            break
        digest.update(piece)
        total += len(piece)
    return jsonify(size=total, sha256=digest.hexdigest())


validated = validator(flask_app)


def app(environ, start_response):
    """The validated app, except for form posts: werkzeug parses a urlencoded form with
    `wsgi.input.read()` (no size: allowed with wsgi.input_terminated, which we set),
    which wsgiref's validator refuses since PEP 3333 lists only read(size)."""
    if environ["PATH_INFO"] == "/form":
        return flask_app(environ, start_response)
    return validated(environ, start_response)
