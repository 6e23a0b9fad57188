"""A Falcon app for tests/test_wsgi.py."""

from wsgiref.validate import validator

import falcon


class Things:
    def on_get(self, req, resp, name):
        resp.media = {"thing": name, "q": req.get_param("q")}

    def on_post(self, req, resp, name):
        data = req.bounded_stream.read()
        resp.media = {"thing": name, "received": len(data)}
        resp.status = falcon.HTTP_201


falcon_app = falcon.App()
falcon_app.add_route("/things/{name}", Things())
app = validator(falcon_app)
