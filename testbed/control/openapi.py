"""The API's OpenAPI 3.1 document, written from the router's table, and a readable page of it.

A route added to the table is documented by that alone; a test checks the two match both ways.
"""

from __future__ import annotations

import html
import re

from testbed.control.router import Raw, Route

_CAPTURE = re.compile(r"\{(\w+)\*?\}")


def openapi_path(template: str) -> str:
    """"/files/{path*}" -> "/files/{path}": OpenAPI has no rest-of-path capture, only its name."""
    return _CAPTURE.sub(r"{\1}", template)


def document(routes: list[Route], version: str) -> dict:
    paths: dict[str, dict] = {}
    for route in routes:
        path = openapi_path(route.template)
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in _CAPTURE.findall(route.template)]
        parameters += [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                       for name in route.query]
        media = route.produces
        ok = {"description": "Success", "content": {media: {"schema": {} if media == "application/json"
                                                                       else {"type": "string"}}}}
        operation = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', path).strip('_') or 'root'}",
            "responses": {"200": ok, "default": {"$ref": "#/components/responses/Error"}},
        }
        if parameters:
            operation["parameters"] = parameters
        if route.method in ("POST", "PUT"):
            operation["requestBody"] = {"required": False, "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string"}}}}
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "twisted-testbed control API", "version": version,
                 "description": "Drive a running testbed: faults, journal, live events, waits and what each "
                                "server holds. Mutating calls from another site's pages are refused; with a "
                                "[control] token every call needs 'Authorization: Bearer TOKEN'. A call carrying a session "
                                "(X-Testbed-Session header or ?session=) sees and changes only that session's "
                                "journal events, mail, requests, queries and faults."},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {
            "responses": {"Error": {"description": "The reason, as {\"error\": ..., \"status\": N}", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "error": {"type": "string"}, "status": {"type": "integer"}}}}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def page(doc: dict) -> Raw:
    """The document as one self-contained HTML page: every operation with its parameters."""
    rows = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", []))
            rows.append(f"<tr><td class=m>{method.upper()}</td><td><code>/api/v1{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td><td>{html.escape(params)}</td></tr>")
    body = f"""<!doctype html><html><head><meta charset=utf-8><title>{html.escape(doc['info']['title'])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}td{{padding:4px 8px;border-bottom:1px solid #ddd;
vertical-align:top}}.m{{font-weight:bold}}</style></head><body><h1>{html.escape(doc['info']['title'])}</h1>
<p>{html.escape(doc['info']['description'])}</p><p><a href="/api/v1/openapi.json">openapi.json</a></p>
<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th></tr>{''.join(rows)}</table></body></html>"""
    return Raw(body.encode("utf-8"), "text/html; charset=utf-8")
