"""A Flask app: `ferrocorn --interface wsgi examples.flask_app:app` (or just
`ferrocorn examples.flask_app:app`: --interface auto recognises a WSGI app)."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.get("/json")
def json_route():
    return jsonify(message="Hello, world!", items=[1, 2, 3])
