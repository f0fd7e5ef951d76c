"""The OpenAPI document lists every route with its request schema, examples and the bearer
scheme; the seeds' examples in it are requests the server accepts; the interactive docs load
every asset from this server and render with no network."""

from __future__ import annotations

import jsonschema
import pytest
import requests
from starlette.routing import Route

from minitoolai.api_docs import ASSETS, SCHEMAS, SEED_CHAT_EXAMPLE, SEED_IMAGE_EXAMPLE
from minitoolai.app import create_app
from tests.conftest import make_customer, run
from tests.dashboard.conftest import browser  # noqa: F401  (the headless Chromium fixture)
from tests.servers import ThreadedServer

# the dashboard's pages and the docs themselves are not API routes
NOT_API = ("/api/docs", "/api/redoc", "/api/openapi.json", "/api/files/")


def spelling(path: str) -> str:
    """Each route is served with and without its trailing slash; /api documents the slash,
    /v1 (as OpenAI does) and /health do not."""
    if path.endswith("}"):  # a path parameter last: one spelling
        return path
    return path.rstrip("/") + "/" if path.startswith("/api") else path.rstrip("/")


def flat(routes) -> list[Route]:
    """Every route, with included routers opened (FastAPI keeps them nested)."""
    out = []
    for route in routes:
        router = getattr(route, "original_router", None)
        out.extend(flat(router.routes) if router is not None else [route])
    return out


def api_routes(app) -> set[tuple[str, str]]:
    """(path, method) of every API route the app serves, in its documented spelling."""
    return {(spelling(route.path), method.lower())
            for route in flat(app.routes)
            if isinstance(route, Route) and route.path.startswith(("/api", "/v1", "/health"))
            and not route.path.startswith(NOT_API)
            for method in route.methods - {"HEAD"}}


def validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "components": doc["components"]})


@pytest.fixture
def live(make_settings):
    with ThreadedServer(create_app(make_settings())) as server:
        yield server


def test_every_route_is_documented_with_its_body_and_security(live, make_settings):
    doc = requests.get(live.url + "/api/openapi.json").json()
    documented = {(spelling(path), method) for path, ops in doc["paths"].items()
                  for method in ops}
    app = create_app(make_settings())
    served = api_routes(app)
    assert len(served) >= 14 and ("/api/chat-completions/", "post") in served
    missing = served - documented
    assert not missing, missing
    assert ("/api/chat-completions/", "post") in documented
    assert ("/v1/chat/completions", "post") in documented
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "Your API key"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "post":
                body = op["requestBody"]["content"]["application/json"]
                assert "schema" in body and "example" in body, (path, method)
            public = path.startswith(("/health", "/api/texttoimage/files/")) or path in (
                "/api/models/", "/api/texttoimage/jobs/", "/api/voices/")
            assert ("security" in op) is not public, (path, method)
    # every schema of ours is valid JSON Schema, and its example validates against it
    for name, schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
    validator(doc, "ChatCompletionRequest").validate(SEED_CHAT_EXAMPLE)
    validator(doc, "ImageRequest").validate(SEED_IMAGE_EXAMPLE)
    errors = list(validator(doc, "ImageRequest").iter_errors({**SEED_IMAGE_EXAMPLE, "steps": 9}))
    assert errors and errors[0].path[-1] == "steps"


def test_the_documented_examples_pass_the_servers_validation(live, database_url):
    """The examples are requests this server accepts: they get past validation (no 400) and
    stop only where this test server has no upstream or checkpoint (503)."""
    customer = run(make_customer(database_url, 10**9))
    doc = requests.get(live.url + "/api/openapi.json").json()
    for path in ("/api/chat-completions/", "/api/texttoimage/"):
        example = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"][
            "example"]
        response = requests.post(live.url + path, json=example, headers=customer.headers)
        assert response.status_code == 503, (path, response.text)


def test_docs_pages_use_only_local_assets(live):
    for page in ("/api/docs", "/api/redoc"):
        html = requests.get(live.url + page).text
        assert "/api/docs/assets/" in html and "/api/openapi.json" in html
        assert "cdn." not in html and "fonts.googleapis" not in html
    for name, content_type in ASSETS.items():
        response = requests.get(live.url + "/api/docs/assets/" + name)
        assert response.status_code == 200 and len(response.content) > 1000
        assert response.headers["content-type"].startswith(content_type)
    assert requests.get(live.url + "/api/docs/assets/../app.py").status_code == 404


def test_swagger_renders_every_operation_offline(live, browser):
    page = browser.new_page()
    outside = []

    def route(request_route):
        if request_route.request.url.startswith(live.url):
            request_route.continue_()
        else:  # nothing may leave this machine
            outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(live.url + "/api/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    text = page.inner_text("body")
    assert "/api/chat-completions/" in text and "/v1/chat/completions" in text
    assert "/api/texttoimage/" in text and "Authorize" in text
    assert outside == []
    page.close()
