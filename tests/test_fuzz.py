"""The fuzz suite of issue 15: tens of thousands of generated requests to every route, on
SQLite and PostgreSQL (each its own database, created and dropped by the `database_url`
fixture), with a fixed seed and a time budget.

Phases, against one app served in-process (schemathesis' ASGI transport: no sockets, no
uvicorn, so the budget goes into requests, not into HTTP parsing; the socket edge, bodies
read while they arrive and slow clients, is tested with real servers in tests/test_http.py,
tests/test_slow_clients.py, tests/dashboard/test_hostile.py and tests/test_memory.py):

1. schemathesis on every operation of `/api/openapi.json` (chat completions, responses,
   images, jobs, files, speech, models, balance, health), conforming and non-conforming
   cases, and for each case MUTANTS derived from it (a field replaced by a hostile value,
   a field dropped, an unknown field, the body replaced, broken JSON, invalid UTF-8, another
   Content-Type), each mutant a request of its own;
2. hypothesis strategies written for the billed routes (chat completions streamed and not,
   /v1/responses streamed and not, the seed's and OpenAI's image routes, the jobs endpoint,
   both speech routes): valid bodies (served and charged), one field broken, loose bodies;
3. the dashboard: its pages' query strings, every form (a logged-in operator, with CSRF),
   the anonymous forms (login, sign-up) and the Stripe webhook.

Properties: no response is a 5xx; the charges match the answers exactly (every usage row is
that of a billed 2xx answer, by the x-request-id the answer carried: a refused request is
charged nothing, an accepted one once per billed unit, with the token counts it reported
and, for a chat model, exactly the catalog's price of those tokens); no hold is left open; the balance is the credit less the charges; the ledger verifies.

Cost: the chat upstream is tests/fakes/openai_upstream.py (a few words per answer), images
use the instant backend, the built-in model is off. Scale: MTAI_FUZZ_SCALE multiplies every
example count (1 in CI: about 25,000 requests per database, about 110-120 s of CPU);
MTAI_FUZZ_BUDGET_S bounds each database's run (default 600 s; each phase has its share and
stops sending when it is spent), and MTAI_FUZZ_FLOOR is the request count a run must reach
(default 20,000 times the scale), so that a suite that silently generates less fails.
docs/development.md says more.
"""

from __future__ import annotations

import collections
import json
import os
import time
import urllib.parse

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from minitoolai.app import create_app
from minitoolai.catalog import SEED_IMAGE_MODELS, build_catalog
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.dashboard.conftest import PASSWORD, csrf_of, make_user
from tests.dashboard.fake_stripe import FakeStripe
from tests.fakes.openai_upstream import FakeOpenAI
from tests.speech.helpers import account_state, usage_rows

SEED = 15
SCALE = float(os.environ.get("MTAI_FUZZ_SCALE", "1"))
BUDGET_S = float(os.environ.get("MTAI_FUZZ_BUDGET_S", str(600 * max(1.0, SCALE))))
FLOOR = int(os.environ.get("MTAI_FUZZ_FLOOR", str(int(20_000 * SCALE))))
CREDIT = 10**15
MUTANTS = 4  # requests derived from each schemathesis case


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


# ---- what is charged --------------------------------------------------------------------------

# routes that charge one usage row per 2xx answer (the OpenAI image route: one per image)
BILLED = {"/api/chat-completions/", "/v1/chat/completions", "/v1/responses",
          "/api/texttoimage/", "/api/texttospeech/", "/v1/audio/speech"}


def billed_units(path: str, response: requests.Response) -> int:
    if response.status_code >= 300:
        return 0
    if path == "/v1/images/generations":
        return len(response.json()["data"])
    return 1 if path in BILLED else 0


def header(response, name: str) -> str | None:
    """A header of a `requests` answer or of a schemathesis one (whose values are lists)."""
    value = response.headers.get(name)
    return value[0] if isinstance(value, list) else value


def reported_tokens(path: str, response: requests.Response) -> tuple[int, int] | None:
    """The (prompt, completion) tokens a whole (not streamed) chat answer reports."""
    if response.status_code >= 300 or path not in (
            "/api/chat-completions/", "/v1/chat/completions", "/v1/responses"):
        return None
    if not (header(response, "content-type") or "").startswith("application/json"):
        return None
    usage = response.json().get("usage") or {}
    if path == "/v1/responses":
        return usage.get("input_tokens"), usage.get("output_tokens")
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


class Tally:
    """Every request sent: counts per route and status, the request ids of the answers, the
    billed units expected per request id, and the time budget."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.cpu_started = time.process_time()
        self.budget_s = budget_s
        self.deadline = self.started + budget_s
        self.counts: collections.Counter = collections.Counter()
        self.statuses: collections.Counter = collections.Counter()
        self.billed: dict[str, int] = {}  # request id -> usage rows it must have
        self.tokens: dict[str, tuple[int, int]] = {}
        self.refused: set[str] = set()
        self.phases: list[tuple[str, int, float]] = []
        self.out_of_time = False

    def begin(self, share: float) -> None:
        """A phase starts: it may run until `share` (cumulative) of the budget is spent, so
        that a slow phase leaves the later ones their time."""
        self.deadline = self.started + self.budget_s * share

    def spent(self, route: str) -> bool:
        """Whether to stop sending to `route`: the phase's time is spent (every route still
        gets a few requests, so none goes untested)."""
        if time.monotonic() > self.deadline and self.counts[route] >= 3:
            self.out_of_time = True
            return True
        return False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, route: str, path: str, response: requests.Response, what) -> None:
        self.counts[route] += 1
        self.statuses[response.status_code] += 1
        assert response.status_code < 500, (route, what, response.text[:500])
        request_id = header(response, "x-request-id")
        if path not in BILLED and path != "/v1/images/generations":
            return
        assert request_id, (route, response.headers)
        if response.status_code >= 300:
            self.refused.add(request_id)
            return
        units = billed_units(path, response)
        if units:
            self.billed[request_id] = units
        tokens = reported_tokens(path, response)
        if tokens is not None:
            self.tokens[request_id] = tokens

    def phase(self, name: str, since_total: int, since: float, cpu_since: float) -> None:
        self.phases.append((name, self.total - since_total, time.monotonic() - since,
                            time.process_time() - cpu_since))
        print("\nfuzz phase {}: {} requests in {:.1f} s ({:.1f} s of CPU)".format(
            *self.phases[-1]), flush=True)


def fuzz_settings(n: int):
    return settings(max_examples=examples(n), deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
                    suppress_health_check=list(HealthCheck))


# ---- hostile values and mutations ------------------------------------------------------------

def deep(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = [None, True, False, 0, -1, 1.5, 2**64, -(2**70), 1e308, "", " ", "\x00", "a\x00b",
           "\ud800", "\udfff", "²", "١٢٣", "9" * 5000, "x" * 20_000, "<|im_start|>system",
           "1e400", "NaN", "9999-12-31", [], {}, [1, "a", None], {"a": {"b": "c"}},
           {"type": "x"}, deep(63), deep(65), deep(300), [{"role": "user", "content": "hi"}]]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/xml", None]
# (kind, index into HOSTILE, field selector, content type index); kinds weighted by how many
# ways each can break a request
MUTATION = st.tuples(
    st.sampled_from(["replace"] * 4 + ["drop", "unknown", "whole", "truncate", "bad_utf8",
                                       "content_type"]),
    st.integers(0, len(HOSTILE) - 1), st.integers(0, 63),
    st.integers(0, len(CONTENT_TYPES) - 1))


def encode(body) -> bytes:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, as a hostile client sends them
    return json.dumps(body, ensure_ascii=True).encode()


def mutate(body, mutation) -> tuple[bytes, str | None]:
    """A JSON body broken one way, and the Content-Type to send it with."""
    kind, value_index, selector, type_index = mutation
    value = HOSTILE[value_index]
    content_type = "application/json"
    if isinstance(body, dict) and body and kind in ("replace", "drop"):
        field = sorted(body)[selector % len(body)]
        body = {k: v for k, v in body.items() if k != field}
        if kind == "replace":
            body[field] = value
    elif isinstance(body, dict) and kind == "unknown":
        body = {**body, f"unknown_{selector}": value}
    elif kind in ("whole", "replace", "drop", "unknown"):
        body = value
    raw = encode(body)
    if kind == "truncate":
        raw = raw[:selector % max(1, len(raw))]
    elif kind == "bad_utf8":
        raw = raw[:selector % max(1, len(raw))] + b"\xff\xfe" + raw[selector % max(1, len(raw)):]
    elif kind == "content_type":
        content_type = CONTENT_TYPES[type_index]
    return raw, content_type


def mutate_parameter(value: str, mutation) -> str:
    kind, value_index, selector, _ = mutation
    hostile = HOSTILE[value_index]
    text = hostile if isinstance(hostile, str) else json.dumps(hostile)
    return text if kind != "unknown" else value + text[:selector]


# ---- strategies of the billed routes ---------------------------------------------------------

HOSTILE_TEXT = st.sampled_from([h for h in HOSTILE if isinstance(h, str)])
TEXT = st.one_of(st.text(max_size=40), HOSTILE_TEXT)
NUMBER = st.one_of(st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, 1, 2]))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
ANY = st.one_of(VALUE, st.sampled_from([5, 63, 64, 65, 200]).map(deep))


def fields(required: dict[str, st.SearchStrategy],
           optional: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Bodies of three kinds: valid ones (some get served and charged), valid ones with one
    field replaced by any value (or one unknown field added), and loose ones (any subset of
    the fields, any values, unknown fields)."""
    valid = st.fixed_dictionaries(required, optional=optional)
    mutated = valid.flatmap(lambda body: st.tuples(
        st.sampled_from(sorted(body) + ["unknown_field"]), ANY).map(
        lambda kv: {**body, kv[0]: kv[1]}))
    loose = st.fixed_dictionaries({}, optional={
        k: st.one_of(v, ANY) for k, v in {**required, **optional}.items()}).flatmap(
        lambda body: st.dictionaries(TEXT, ANY, max_size=2).map(
            lambda extra: {**extra, **body}))
    return st.one_of(valid, valid, mutated, loose)


MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                 "content": st.one_of(st.just("hello"), TEXT)},
                                optional={"name": st.text(max_size=8)})
CHAT_MODELS = st.sampled_from(["gpt-4o", "gpt-5", "gpt-4o-mini"])
CHAT = fields({"model": CHAT_MODELS, "messages": st.lists(MESSAGE, min_size=1, max_size=3)},
              {"temperature": st.floats(0, 2), "max_completion_tokens": st.integers(1, 50),
               "max_tokens": st.integers(1, 50), "stream": st.booleans(),
               "stream_options": st.just({"include_usage": True}),
               "top_p": st.floats(0, 1), "stop": st.text(max_size=3),
               "n": st.integers(1, 2), "seed": st.integers(0, 100),
               "response_format": st.just({"type": "text"}), "user": st.text(max_size=8),
               "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                           max_size=2)})
RESPONSES = fields({"model": CHAT_MODELS,
                    "input": st.one_of(st.text(min_size=1, max_size=30),
                                       st.lists(MESSAGE, min_size=1, max_size=2))},
                   {"instructions": st.text(max_size=20), "stream": st.booleans(),
                    "max_output_tokens": st.integers(16, 64), "temperature": st.floats(0, 2),
                    "store": st.booleans(), "top_p": st.floats(0, 1),
                    "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                max_size=2)})
IMAGE = fields({"model": st.just("realvision"), "prompt": st.text(min_size=1, max_size=30)},
               {"negativePrompt": st.text(max_size=20), "steps": st.integers(1, 8),
                "cfgScale": st.floats(1, 7), "width": st.sampled_from([256, 512]),
                "height": st.sampled_from([256, 1344]), "seed": st.integers(0, 2**32 - 1),
                "scheduler": st.sampled_from(["Euler a", "DPM++ SDE"])})
SPEECH = fields({"model": st.just("espeak-ng"), "input": st.sampled_from(["Hi.", "Ok"]),
                 "voice": st.just("alloy")},
                {"response_format": st.sampled_from(["wav", "pcm"]),
                 "speed": st.floats(0.25, 4)})
OPENAI_IMAGE = fields({"prompt": st.text(min_size=1, max_size=30)},
                      {"model": st.just("realvision"), "n": st.integers(1, 2),
                       "size": st.sampled_from(["256x256", "512x256", "auto", "1x1"]),
                       "response_format": st.sampled_from(["url", "b64_json"]),
                       "steps": st.integers(1, 8), "seed": st.integers(0, 100)})
JOBS = fields({"jobid": st.one_of(st.integers(-1, 2**64), TEXT), "signature": TEXT}, {})
BODY_CONTENT_TYPES = st.sampled_from(["application/json"] * 6 + [
    "text/plain", "application/x-www-form-urlencoded", None,
    "application/json; charset=utf-8"])
# route -> (strategy, examples); speech is the dearest (an eSpeak NG process per answer)
ROUTES = {"/api/chat-completions/": (CHAT, 1200), "/v1/chat/completions": (CHAT, 1200),
          "/v1/responses": (RESPONSES, 1000), "/api/texttoimage/": (IMAGE, 700),
          "/api/texttoimage/jobs/": (JOBS, 500), "/v1/images/generations": (OPENAI_IMAGE, 700),
          "/v1/audio/speech": (SPEECH, 400), "/api/texttospeech/": (SPEECH, 400)}


# ---- the dashboard ---------------------------------------------------------------------------

FORM_TEXT = st.one_of(st.text(max_size=30), st.sampled_from([
    "", "\x00", "a\x00b", "²", "١٢٣", "9" * 30, "1e400", "-1", "0.0000000001", "NaN",
    "9999-12-31", "0001-01-01", "2026-02-30", "20260101", "2026-W01-1", "<script>", "%00",
    "1" * 5000, "$5", " 12.5 ", "100000000000", "https://evil.example/", "//evil.example"]))
PARAMS = st.dictionaries(st.sampled_from(["start", "end", "model", "before", "entries_before",
                                          "q", "state", "batch", "topup", "next", "days",
                                          "metric", "charges", "request_id", "zz"]),
                         FORM_TEXT,
                         max_size=4)
PAGES = ["/", "/usage", "/usage.csv", "/keys", "/credits", "/credits.csv", "/playground",
         "/playground/charge", "/docs", "/admin", "/admin/catalog", "/admin/accounts", "/admin/codes",
         "/admin/accounts/{me}", "/admin/accounts/{me}/ledger.csv",
         "/admin/accounts/{other}/usage.csv", "/login", "/signup",
         "/account", "/forgot", "/reset/{text}",
         "/static/dashboard/{text}", "/admin/accounts/{text}", "/admin/codes.csv"]
KEY_FIELDS = ["name", "spend_limit", "month_limit", "expires", "models"]
FORMS = {"/keys": KEY_FIELDS, "/redeem": ["code"],
         "/topup/checkout": ["amount"], "/admin/codes": ["amount", "count", "batch"],
         "/admin/accounts/{me}/credit": ["amount", "reason", "paid"],
         "/admin/accounts/{other}/disabled": ["disabled"],
         "/keys/{key}": KEY_FIELDS, "/keys/{text}/revoke": [],
         "/admin/codes/{text}/void": ["state"],
         "/admin/accounts/{other}/keys/{text}/revoke": [],
         # the current password is checked (a slow hash) before anything else
         "/account/password": ["current", "password", "password2"],
         # last: a valid password here, or a logout, ends the session the fuzzer uses
         "/admin/accounts/{me}/password": ["password"], "/account/logout-everywhere": [],
         "/logout": []}
# the forms anyone can post (no session; the anonymous CSRF cookie)
ANONYMOUS_FORMS = {"/signup": ["email", "name", "password", "password2"],
                   "/login": ["email", "password", "next"], "/forgot": ["email"],
                   "/reset/{text}": ["password", "password2"]}
PLAYGROUND = {"/playground/chat": CHAT, "/playground/image": IMAGE,
              "/playground/speech": SPEECH}


def form_of(names: list[str]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={n: FORM_TEXT for n in names}).flatmap(
        lambda form: st.dictionaries(FORM_TEXT, FORM_TEXT, max_size=2).map(
            lambda extra: {**extra, **form}))


# ---- the test --------------------------------------------------------------------------------

def test_fuzz_every_route(make_settings, database_url):
    customer = run(make_customer(database_url, CREDIT))
    admin_id, admin_email = run(make_user(database_url, admin=True, credit_nano=10**12))
    other_id, _ = run(make_user(database_url))
    tally = Tally(BUDGET_S)
    with FakeOpenAI(api_key="sk-upstream") as upstream, FakeStripe() as stripe:
        app_settings = make_settings(
            public_url="http://testserver", rate_limit_per_minute="0",
            chat={"providers": {"openai": {"base_url": upstream.base_url,
                                           "api_key": "sk-upstream", "read_timeout": 5}},
                  "builtin_local_model": False},
            # every image model the document lists is served (an unconfigured one is a 503)
            images={"models": {name: {"backend": "instant"} for name in SEED_IMAGE_MODELS},
                    "poll_interval_seconds": 0.05},
            dashboard={"stripe": {"secret_key": stripe.secret_key,
                                  "webhook_secret": stripe.webhook_secret,
                                  "api_base": stripe.base_url}})
        app = create_app(app_settings)
        try:
            with asgi.get_client(app) as api:
                api_phase(app, api, customer.key, tally)
                billed_routes_phase(api, customer.key, tally)
                dashboard_phase(app, tally, admin_id, admin_email, other_id)
                # wait for the image jobs to finish and every hold to settle
                deadline = time.monotonic() + 120
                while run(account_state(database_url, customer.account_id))[1] and \
                        time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            asgi.shutdown_lifespans()

    report(tally)
    check_charges(database_url, customer.account_id, tally, build_catalog(app_settings))
    run(assert_ledger_ok(database_url))
    assert tally.total >= FLOOR, (
        f"{tally.total} requests, fewer than {FLOOR}: " + (
            f"the time budget ({BUDGET_S:.0f} s, MTAI_FUZZ_BUDGET_S) ran out first: the "
            "machine is slower or the requests dearer than they were" if tally.out_of_time
            else "the suite generated fewer requests than it should"))


def api_phase(app, api, key: str, tally: Tally) -> None:
    """schemathesis on every operation of the published document, each case with mutants."""
    started, before, cpu = time.monotonic(), tally.total, time.process_time()
    tally.begin(0.55)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    auth = {"Authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.path for op in operations]

    def fuzz(operation, mode: GenerationMode, n: int, mutants: int) -> None:
        route = f"{operation.method.upper()} {operation.path}"

        @seed(SEED)
        @fuzz_settings(n)
        @given(case=operation.as_strategy(generation_mode=mode, headers=auth),
               mutations=st.lists(MUTATION, min_size=mutants, max_size=mutants))
        def case_(case, mutations):
            if tally.spent(route):
                return
            response = case.call(session=api, timeout=30)
            tally.record(route, operation.path, response,
                         (mode, case.path_parameters, case.query, case.body))
            for mutation in mutations:
                send_mutant(case, mutation)

        def send_mutant(case, mutation) -> None:
            path = case.formatted_path
            query = dict(case.query or {})
            if case.path_parameters:
                name = sorted(case.path_parameters)[mutation[2] % len(case.path_parameters)]
                params = {**case.path_parameters,
                          name: mutate_parameter(str(case.path_parameters[name]), mutation)}
                path = operation.path.format(**{
                    k: urllib.parse.quote(str(v), safe="", errors="surrogatepass")
                    for k, v in params.items()})
            elif query:
                name = sorted(query)[mutation[2] % len(query)]
                query[name] = mutate_parameter(str(query[name]), mutation).encode(
                    "utf-8", "surrogatepass")
            headers = dict(auth)
            raw = None
            if operation.method.upper() == "POST":
                raw, content_type = mutate(case.body if isinstance(case.body, (dict, list))
                                           else {}, mutation)
                if content_type:
                    headers["Content-Type"] = content_type
            response = api.request(operation.method.upper(), path, params=query, data=raw,
                                   headers=headers, timeout=30)
            tally.record(route + " (mutant)", operation.path, response,
                         (path, query, raw[:300] if raw else None))

        try:
            case_()
        except Unsatisfiable:
            # a lone string path parameter has no non-conforming value
            assert mode is GenerationMode.NEGATIVE and not list(operation.body), route

    for operation in operations:
        has_inputs = bool(list(operation.body)) or any(
            parameter.name != "Authorization" for parameter in operation.iter_parameters())
        # an operation without inputs has one request to make; the others get 150 cases a
        # mode, each with 4 mutants (generating a case from the document costs ~10-25 ms
        # of CPU, a mutant next to nothing)
        fuzz(operation, GenerationMode.POSITIVE, 150 if has_inputs else 1,
             MUTANTS if has_inputs else 0)
        if has_inputs:  # negative cases need an input to break (the key is fixed)
            fuzz(operation, GenerationMode.NEGATIVE, 150, MUTANTS)
    # every operation of the document was called
    called = {route.removesuffix(" (mutant)") for route in tally.counts}
    assert {f"{op.method.upper()} {op.path}" for op in operations} <= called
    tally.phase("schemathesis and mutants", before, started, cpu)


def billed_routes_phase(api, key: str, tally: Tally) -> None:
    started, before, cpu = time.monotonic(), tally.total, time.process_time()
    tally.begin(0.8)

    def fuzz(path: str, strategy, n: int) -> None:
        @seed(SEED)
        @fuzz_settings(n)
        @given(body=strategy, content_type=BODY_CONTENT_TYPES)
        def case(body, content_type):
            if tally.spent(f"POST {path} (strategy)"):
                return
            headers = {"Authorization": f"Bearer {key}"}
            if content_type:
                headers["Content-Type"] = content_type
            response = api.post(path, data=encode(body), headers=headers, timeout=30)
            tally.record(f"POST {path} (strategy)", path, response, body)

        case()

    for path, (strategy, n) in ROUTES.items():
        fuzz(path, strategy, n)
    tally.phase("billed routes' strategies", before, started, cpu)


def dashboard_phase(app, tally: Tally, admin_id: int, admin_email: str, other_id: int) -> None:
    started, before, cpu = time.monotonic(), tally.total, time.process_time()
    tally.begin(1.0)
    with asgi.get_client(app) as http, asgi.get_client(app) as anonymous:
        page = http.get("/login")
        logged_in = http.post("/login", data={"csrf_token": csrf_of(page.text),
                                              "email": admin_email, "password": PASSWORD},
                              allow_redirects=False)
        assert logged_in.status_code == 303, logged_in.text[:300]
        token = csrf_of(http.get("/keys").text)
        created = http.post("/keys", data={"csrf_token": token, "name": "fuzz"})
        assert created.status_code == 200
        key_id = created.text.split("/keys/", 1)[1].split("/", 1)[0].split('"', 1)[0]
        assert key_id.startswith("key_"), key_id

        def fill(template: str, text: str = "x") -> str:
            return template.format(me=admin_id, other=other_id, key=key_id,
                                   text=urllib.parse.quote(text, safe=""))

        def record(route: str, response: requests.Response, what) -> None:
            tally.record(route, route, response, what)

        def fuzz_page(template: str) -> None:
            @seed(SEED)
            @fuzz_settings(120)
            @given(params=PARAMS, text=FORM_TEXT)
            def get(params, text):
                if not tally.spent(f"GET {template}"):
                    record(f"GET {template}", http.get(fill(template, text), params=params,
                                                       allow_redirects=False), params)

            get()

        def fuzz_playground(path: str, strategy) -> None:
            @seed(SEED)
            @fuzz_settings(150)
            @given(body=strategy)
            def playground(body):
                if not tally.spent(f"POST {path}"):
                    record(f"POST {path}", http.post(
                        path, data=encode(body), allow_redirects=False,
                        headers={"Content-Type": "application/json", "X-CSRF-Token": token}),
                        body)

            playground()

        for template in PAGES:
            fuzz_page(template)
        for path, strategy in PLAYGROUND.items():
            fuzz_playground(path, strategy)

        @seed(SEED)
        @fuzz_settings(300)
        @given(body=st.one_of(st.binary(max_size=200), CHAT.map(encode)),
               signature=st.one_of(FORM_TEXT, st.builds(
                   "t={},v1={}".format, st.one_of(st.integers(), FORM_TEXT),
                   st.text("0123456789abcdef", max_size=64))))
        def webhook(body, signature):
            if not tally.spent("POST /billing/stripe/webhook"):
                record("POST /billing/stripe/webhook", anonymous.post(
                    "/billing/stripe/webhook", data=body, headers={
                        "Content-Type": "application/json",
                        # UTF-8 bytes on the wire (the in-process client writes latin-1);
                        # no line breaks (no client can send them in a header)
                        "Stripe-Signature": signature.encode("utf-8", "replace")
                        .decode("latin-1").replace("\r", "").replace("\n", "").lstrip()}),
                    (body, signature))

        webhook()

        anonymous_token = csrf_of(anonymous.get("/signup").text)

        def fuzz_anonymous(template: str, names: list[str]) -> None:
            @seed(SEED)
            @fuzz_settings(100)
            @given(form=form_of(names), text=FORM_TEXT)
            def anonymous_form(form, text):
                if not tally.spent(f"POST {template}"):
                    record(f"POST {template}", anonymous.post(
                        fill(template, text), data={**form, "csrf_token": anonymous_token},
                        allow_redirects=False), form)

            anonymous_form()

        def fuzz_form(template: str, names: list[str]) -> None:
            @seed(SEED)
            @fuzz_settings(150)
            @given(form=form_of(names), text=FORM_TEXT)
            def post(form, text):
                if not tally.spent(f"POST {template}"):
                    record(f"POST {template}", http.post(
                        fill(template, text), data={**form, "csrf_token": token},
                        allow_redirects=False), form)

            post()

        for template, names in ANONYMOUS_FORMS.items():
            fuzz_anonymous(template, names)
        for template, names in FORMS.items():
            fuzz_form(template, names)
    tally.phase("dashboard", before, started, cpu)


def report(tally: Tally) -> None:
    elapsed = time.monotonic() - tally.started
    cpu = time.process_time() - tally.cpu_started
    print(f"\nfuzz: {tally.total} requests in {elapsed:.1f} s, {cpu:.1f} s of CPU "
          f"({tally.total / elapsed:.0f}/s, seed {SEED}, scale {SCALE}, budget {BUDGET_S:.0f} s"
          f"{', SPENT' if tally.out_of_time else ''}), statuses "
          f"{dict(sorted(tally.statuses.items()))}, {sum(tally.billed.values())} billed units, "
          f"{len(tally.refused)} refused on billed routes")
    for name, count, seconds, cpu_seconds in tally.phases:
        print(f"  phase {name}: {count} requests in {seconds:.1f} s ({cpu_seconds:.1f} s CPU)")
    for route, count in sorted(tally.counts.items()):
        print(f"  {count:6d}  {route}")


def check_charges(database_url: str, account_id: int, tally: Tally, catalog) -> None:
    balance, held = run(account_state(database_url, account_id))
    rows = run(usage_rows(database_url, account_id))
    per_request: collections.Counter = collections.Counter()
    for row in rows:
        # the OpenAI image route's rows carry the answer's id with -N per image (n > 1)
        request_id = row.request_id
        if request_id not in tally.billed and request_id.rsplit("-", 1)[0] in tally.billed:
            request_id = request_id.rsplit("-", 1)[0]
        assert request_id not in tally.refused or row.cost == 0, (
            "a refused request was charged", row)
        if row.cost:
            assert request_id in tally.billed, ("a charge no billed answer accounts for", row)
            per_request[request_id] += 1
        if request_id in tally.tokens:
            assert (row.prompt_tokens, row.completion_tokens) == tally.tokens[request_id], row
        model = catalog.get(row.model)
        if model is not None and model.kind == "chat":  # the exact price of its tokens
            assert row.cost == model.chat_cost(row.prompt_tokens, row.completion_tokens), row
    # every billed answer charged once per unit, none more
    assert per_request == collections.Counter(tally.billed), [
        (rid, per_request[rid], n) for rid, n in tally.billed.items() if per_request[rid] != n]
    assert held == 0
    assert balance == CREDIT - sum(row.cost for row in rows)
    assert tally.billed, "no generated request was valid and served"
