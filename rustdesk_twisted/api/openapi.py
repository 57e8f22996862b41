"""The OpenAPI 3.1 document of what the API serves, built from the route table.

Each route states its summary and JSON Schemas where it is registered
(:meth:`.http.Router.add`), so the document cannot drift from the code; it is
served at ``/openapi.json`` and schemathesis fuzzes the server against it in CI.
"""

import re

from .. import __version__
from .http import json_reply

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def document(router):
    paths = {}
    for route in router.routes:
        operation = _operation(route)
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "rustdesk-twisted API", "version": __version__,
                 "description": "The HTTP API RustDesk clients call (port 21114), and the web "
                                "console's pages."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route):
    operation = {
        "operationId": f"{route.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', route.pattern).strip('_') or 'root'}",
        "summary": route.summary or route.name,
        "responses": {
            "200": _success(route.reply),
            "4XX": {"description": "Refused: the reason in `error`",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    }
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"\{(\w+)\}", route.pattern)]
    parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                   for name, schema in route.query.items()]
    if parameters:
        operation["parameters"] = parameters
    if route.auth is not None:
        operation["security"] = [{"bearer": []}]
    if route.body is not None:
        if "form" in route.body:
            content_type, schema = "application/x-www-form-urlencoded", route.body["form"]
        elif "raw" in route.body:
            content_type, schema = "application/octet-stream", route.body["raw"]
        else:
            content_type, schema = "application/json", route.body
        operation["requestBody"] = {"required": False, "content": {content_type: {"schema": schema}}}
    return operation


def _success(reply):
    if reply == "empty":
        return {"description": "Done (an empty body is the client's success)"}
    if reply == "text":
        return {"description": "Plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    if reply == "html":
        return {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
    if reply is None:
        return {"description": "OK"}
    return {"description": "OK", "content": {"application/json": {"schema": reply}}}


def add_routes(router):
    router.add("GET", "/openapi.json", lambda call: json_reply(document(router)),
               summary="This OpenAPI document", reply={"type": "object"})
