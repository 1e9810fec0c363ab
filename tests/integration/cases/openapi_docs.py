"""The OpenAPI documents (<service>/openapi.yaml) and the docs site.

- Each document is linted by a real OpenAPI linter, Redocly CLI (pinned in
  docs/package.json, configured strictly in docs/redocly.yaml): any error or
  warning fails, and so does a problem in the linter's configuration or an
  ignore-file entry beyond the one that is accounted for.
- Each daemon's route table (`api_routes[]` in <service>/src/server.c) and its
  document list the same methods and paths, both ways; `*` segments are
  `{param}` segments. A path served both with and without a trailing slash
  must be one of the pairs listed here, and documented both ways.
- The running daemons answer every documented route (no "no such route", no
  405), and a 405's `Allow` lists exactly the documented methods.
- nginx serves /docs/ (Swagger UI, scripts/docs.sh, wired by harness.py) and
  the three documents, with nothing loaded from elsewhere.
"""

import json
import os
import re
import subprocess
import time

import harness
from harness import http

from .base import Base

ROOT = harness.ROOT
DOCS = ROOT / "docs"
REDOCLY = DOCS / "node_modules" / "@redocly" / "cli" / "bin" / "cli.js"
SERVICES = ("auth-service", "crypto-server", "crypto-client")

# Paths a daemon serves both with and without a trailing slash, on purpose.
# Each is documented both ways; a new pair must be added here knowingly.
SLASH_PAIRS = {
    "auth-service": set(),
    "crypto-server": {"/api/currency"},  # the seed's GET /api/currency/ and /api/currency
    "crypto-client": set(),
}

# Problems excused in docs/.redocly.lint-ignore.yaml (by exact location).
IGNORED = {"auth-service": 0, "crypto-server": 1, "crypto-client": 0}

# The agent's contract (the issue): its route table must be exactly this.
AGENT_CONTRACT = {
    ("POST", "/api/configure"), ("POST", "/api/register"), ("POST", "/api/login"),
    ("GET", "/api/status"), ("GET", "/api/currencies"), ("GET", "/api/currencies/{}"),
    ("GET", "/api/health"),
}

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROUTE_RE = re.compile(r'\{\s*"([A-Z]+)"\s*,\s*"([^"]*)"')


def redocly(*args, timeout=120):
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true",
               NO_COLOR="1", CI="true")
    return subprocess.run(["node", str(REDOCLY), *map(str, args)], cwd=DOCS, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ensure_linter():
    """docs/node_modules as scripts/docs.sh installs it (npm ci, cached)."""
    if REDOCLY.is_file():
        return
    out = harness.STACK.workdir / "docs-site-lint"
    harness.run([harness.SCRIPTS / "docs.sh", out], timeout=300)
    if not REDOCLY.is_file():
        raise AssertionError(f"scripts/docs.sh ran but {REDOCLY} is missing")


def norm(path):
    """A path with every parameter segment as {}: '/a/*/b' and '/a/{x}/b' -> '/a/{}/b'."""
    return "/".join("{}" if seg == "*" or re.fullmatch(r"\{[^{}/]+\}", seg) else seg
                    for seg in path.split("/"))


def code_routes(service):
    """{(METHOD, normalised path)} of api_routes[] in <service>/src/server.c;
    None when the file (or the table) does not exist."""
    src = ROOT / service / "src" / "server.c"
    if not src.is_file():
        return None
    # Comments out, string literals kept ("/api/currency/*" holds a "/*").
    text = re.sub(r'("(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\')|/\*.*?\*/|//[^\n]*',
                  lambda m: m.group(1) or " ", src.read_text(), flags=re.S)
    m = re.search(r"\bapi_routes\s*\[\s*\]\s*=\s*\{(.*?)\n\s*\};", text, re.S)
    if not m:
        return None
    routes = ROUTE_RE.findall(m.group(1))
    return {(method, norm(pattern)) for method, pattern in routes}


_bundles = {}


def document(service):
    """The document as JSON, through the linter's own parser (redocly bundle)."""
    if service not in _bundles:
        p = redocly("bundle", service, "--ext", "json", "--lint-config", "error")
        if p.returncode != 0:
            raise AssertionError(f"redocly bundle {service} exited {p.returncode}:\n"
                                 f"{p.stderr[-3000:]}")
        _bundles[service] = json.loads(p.stdout)
    return _bundles[service]


def doc_routes(service, raw=False):
    """{(METHOD, path)} of the document; paths normalised unless raw."""
    out = set()
    for path, item in document(service)["paths"].items():
        for method in METHODS:
            if method in item:
                out.add((method.upper(), path if raw else norm(path)))
    return out


def slash_pairs(routes):
    paths = {p for _, p in routes}
    return {p.rstrip("/") for p in paths if p.endswith("/") and len(p) > 1 and
            p.rstrip("/") in paths}


def template_matches(template, path):
    """Like the daemons' router: a {param} is one non-empty segment."""
    t, s = template.split("/"), path.split("/")
    return len(t) == len(s) and all(
        (a.startswith("{") and b != "") or a == b for a, b in zip(t, s))


def concrete(path):
    return re.sub(r"\{[^{}/]+\}", "BTC", path)


class OpenApiLint(Base):
    @classmethod
    def setUpClass(cls):
        ensure_linter()

    def test_01_linter_configuration_is_valid(self):
        p = redocly("check-config", "--lint-config", "error")
        self.assertEqual(p.returncode, 0, f"docs/redocly.yaml:\n{p.stdout}\n{p.stderr[-3000:]}")

    def test_02_each_document_lints_clean(self):
        version = json.loads((REDOCLY.parents[1] / "package.json").read_text())["version"]
        for service in SERVICES:
            with self.subTest(service):
                start = time.monotonic()
                p = redocly("lint", service, "--format", "json", "--lint-config", "error")
                took = time.monotonic() - start
                try:
                    report = json.loads(p.stdout)
                except ValueError:
                    self.fail(f"redocly lint {service} exited {p.returncode}, no JSON report:\n"
                              f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
                problems = "\n".join(
                    f"  {pr.get('severity')} {pr.get('ruleId')}: {pr.get('message')} at "
                    f"{[loc.get('pointer') for loc in pr.get('location', [])]}"
                    for pr in report.get("problems", []))
                totals = report["totals"]
                harness.log(f"redocly {version} lint {service}: {totals} in {took:.2f} s")
                self.assertEqual(p.returncode, 0, f"{service}:\n{problems}\n{p.stderr[-2000:]}")
                self.assertEqual(totals["errors"], 0, f"{service}:\n{problems}")
                self.assertEqual(totals["warnings"], 0, f"{service}:\n{problems}")
                self.assertEqual(totals["ignored"], IGNORED[service],
                                 f"{service}: docs/.redocly.lint-ignore.yaml excuses "
                                 f"{totals['ignored']} problem(s), {IGNORED[service]} expected")

    def test_03_the_linter_does_reject_a_wrong_document(self):
        """A document whose example contradicts its schema must fail: the
        configuration really lints (a green lint is not a no-op)."""
        bad = harness.STACK.workdir / "openapi-broken.yaml"
        text = (ROOT / "crypto-server" / "openapi.yaml").read_text()
        broken = text.replace("                  rate: 64000.5\n",
                              "                  rate: 'not a number'\n", 1)
        self.assertNotEqual(text, broken, "the example to break was not found")
        bad.write_text(broken)
        p = redocly("lint", bad, "--format", "json", "--config", DOCS / "redocly.yaml")
        self.assertNotEqual(p.returncode, 0, p.stdout[-2000:])
        report = json.loads(p.stdout)
        rules = {pr["ruleId"] for pr in report["problems"]}
        self.assertIn("no-invalid-media-type-examples", rules, report)


class OpenApiMatchesRoutes(Base):
    """Route tables against documents, both ways, from the source."""

    @classmethod
    def setUpClass(cls):
        ensure_linter()

    def compare(self, service, code, doc):
        only_code = sorted(code - doc)
        only_doc = sorted(doc - code)
        self.assertEqual((only_code, only_doc), ([], []),
                         f"{service}: served but not documented: {only_code}; "
                         f"documented but not served: {only_doc}")

    def check_slashes(self, service, code, doc):
        served_both = slash_pairs(code)
        self.assertEqual(served_both, SLASH_PAIRS[service],
                         f"{service}: paths served with and without a trailing slash")
        self.assertEqual(slash_pairs(doc), served_both,
                         f"{service}: paths documented with and without a trailing slash")
        for p in served_both:
            for variant in (p, p + "/"):
                methods_code = {m for m, q in code if q == variant}
                methods_doc = {m for m, q in doc if q == variant}
                self.assertEqual(methods_doc, methods_code, f"{service} {variant}")
                self.assertTrue(methods_doc, f"{service} {variant}")

    def test_auth_service(self):
        code = code_routes("auth-service")
        self.assertIsNotNone(code, "no api_routes[] in auth-service/src/server.c")
        doc = doc_routes("auth-service")
        self.compare("auth-service", code, doc)
        self.check_slashes("auth-service", code, doc)

    def test_crypto_server(self):
        code = code_routes("crypto-server")
        self.assertIsNotNone(code, "no api_routes[] in crypto-server/src/server.c")
        doc = doc_routes("crypto-server")
        self.compare("crypto-server", code, doc)
        self.check_slashes("crypto-server", code, doc)
        # the seed's spelling and the bare one, both GET
        self.assertIn(("GET", "/api/currency/"), doc)
        self.assertIn(("GET", "/api/currency"), doc)

    def test_crypto_client_document_is_the_contract(self):
        doc = doc_routes("crypto-client")
        self.compare("crypto-client (document vs the issue's contract)", AGENT_CONTRACT, doc)
        self.check_slashes("crypto-client", AGENT_CONTRACT, doc)

    def test_crypto_client_routes(self):
        code = code_routes("crypto-client")
        if code is None:
            self.skipTest("crypto-client/src/server.c (api_routes[]) does not exist yet: "
                          "its document is checked against the contract only")
        doc = doc_routes("crypto-client")
        self.compare("crypto-client", code, doc)
        self.check_slashes("crypto-client", code, doc)

    def test_internal_routes_are_not_in_the_public_documents(self):
        for service in SERVICES:
            with self.subTest(service):
                paths = {p for _, p in doc_routes(service, raw=True)}
                self.assertFalse({"/metrics", "/health"} & paths, paths)


class OpenApiRoutesServed(Base):
    """Every documented route answers on the running daemons (not "no such
    route", not 405), and every 405's Allow is the documented set. Only
    requests without side effects: no credentials, no valid bodies."""

    @classmethod
    def setUpClass(cls):
        ensure_linter()

    def allow_expected(self, service, path):
        return {m for m, t in doc_routes(service, raw=True) if template_matches(t, path)}

    def probe(self, service, port, via):
        for method, template in sorted(doc_routes(service, raw=True)):
            path = concrete(template)
            with self.subTest(service=service, via=via, route=f"{method} {template}"):
                if method in ("GET", "PUT") or (method == "POST" and service != "crypto-client"):
                    # no credentials / no body: 400, 401, 409, 415 ... never a routing error
                    if template == "/api/currency/stream":
                        with harness.SSE(port, path) as st:  # refused: no token
                            self.assertEqual(st.status, 401, st.headers)
                    else:
                        r = http(method, port, path)
                        self.assertNotEqual(r.status, 405, r)
                        if r.status == 404:
                            self.assertNotEqual(r.json().get("error_description"),
                                                "no such route", r)
                # a method documented nowhere on this path: 405 with the documented Allow
                r = http("DELETE", port, path)
                self.assertJsonError(r, 405, "method_not_allowed", f"DELETE {path} via {via}")
                allow = {m.strip() for m in (r.header("Allow") or "").split(",") if m.strip()}
                self.assertEqual(allow, self.allow_expected(service, path),
                                 f"Allow on {path} via {via}")

    def test_auth_service(self):
        self.probe("auth-service", self.s.auth.port, "direct")
        self.probe("auth-service", self.s.nginx_port, "nginx")

    def test_crypto_server(self):
        if self.s.currency is None:
            self.fail(f"crypto-server did not start: {self.s.currency_error}")
        self.probe("crypto-server", self.s.currency.port, "direct")
        self.probe("crypto-server", self.s.nginx_port, "nginx")

    def test_crypto_client(self):
        agent = getattr(self.s, "agent", None)
        if agent is None or code_routes("crypto-client") is None:
            self.skipTest("no crypto-client in this stack yet "
                          f"({getattr(self.s, 'agent_error', None) or 'not started'})")
        self.probe("crypto-client", agent.port, "direct")
        agent_nginx = getattr(self.s.nginx, "agent_port", None)
        if agent_nginx:
            self.probe("crypto-client", agent_nginx, "nginx")


class DocsThroughNginx(Base):
    """/docs/ and / as built by scripts/docs.sh, through the harness's nginx."""

    def setUp(self):
        static = getattr(self.s.nginx, "static_dir", None)
        if not static:
            self.fail("nginx runs without the docs site (scripts/docs.sh failed?): "
                      f"{getattr(self.s.nginx, 'static_error', 'no static_dir in harness.Nginx')}")

    def get(self, path):
        return self.s.nginx.get(path)

    def assertServed(self, r, ctype, ctx):
        self.assertEqual(r.status, 200, f"{ctx}: {r!r}")
        self.assertEqual((r.header("Content-Type") or "").split(";")[0].strip(), ctype,
                         f"{ctx}: Content-Type")
        # nginx's security headers apply to the static files too
        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff", ctx)
        self.assertEqual(r.header("X-Frame-Options"), "DENY", ctx)
        self.assertTrue(r.header("X-Request-Id"), ctx)

    def assertNoRemoteReference(self, text, ctx):
        for m in re.finditer(r'(?:src|href)\s*=\s*"([^"]*)"', text):
            self.assertFalse(re.match(r"(?i)(https?:)?//", m.group(1)),
                             f"{ctx} loads {m.group(1)} from elsewhere")

    def test_docs_page(self):
        r = self.get("/docs/")
        self.assertServed(r, "text/html", "/docs/")
        html = r.body.decode()
        for ref in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                    "swagger-initializer.js"):
            self.assertIn(ref, html)
        self.assertNoRemoteReference(html, "/docs/")
        self.assertNotIn("<script>", html.replace(" ", ""), "no inline script")
        for asset, ctype in [("swagger-ui-bundle.js", "application/javascript"),
                             ("swagger-ui-standalone-preset.js", "application/javascript"),
                             ("swagger-initializer.js", "application/javascript"),
                             ("swagger-ui.css", "text/css"), ("index.css", "text/css")]:
            with self.subTest(asset):
                # nosniff: a script or style sheet must come with its own type
                self.assertServed(self.get("/docs/" + asset), ctype, asset)
        init = self.get("/docs/swagger-initializer.js").body.decode()
        for service in SERVICES:
            self.assertIn(f'{{ url: "{service}.yaml", name: "{service}" }}', init)
        self.assertIn("validatorUrl: null", init)
        self.assertNotRegex(init, r"https?://", "the initializer points elsewhere")
        # /docs without the slash: a relative redirect to /docs/
        r = self.get("/docs")
        self.assertIn(r.status, (301, 302), r)
        self.assertTrue((r.header("Location") or "").endswith("/docs/"), r.header("Location"))

    def test_documents_are_served_verbatim(self):
        for service in SERVICES:
            with self.subTest(service):
                r = self.get(f"/docs/{service}.yaml")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, (ROOT / service / "openapi.yaml").read_bytes(),
                                 f"/docs/{service}.yaml is not {service}/openapi.yaml")

    def test_landing_page(self):
        r = self.get("/")
        self.assertServed(r, "text/html", "/")
        html = r.body.decode()
        self.assertIn('href="/docs/"', html)
        self.assertNoRemoteReference(html, "/")

    def test_api_and_errors_unchanged_by_the_static_site(self):
        # the API still goes to the daemons, unknown paths are JSON 404s
        self.assertEqual(self.get("/api/auth/health").status, 200)
        r = self.get("/docs/nope.yaml")
        self.assertJsonError(r, 404, "not_found", "/docs/nope.yaml")
        self.assertJsonError(self.get("/metrics"), 404, "not_found", "/metrics")

