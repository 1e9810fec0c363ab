"""crypto-client, the OAuth2 client agent, against the real suite: the seed's
client flow through nginx's agent listener, configuration and its
validation, registration, refused credentials (no retry loop), 5-second
tokens renewed for a minute without a caller seeing an error, one retry
after a 401 from the crypto-server, stale data while the crypto-server is
away, restarts and the state file, the background fetcher's rate lines,
the edge (request ids, 404/405, /metrics) and, last, log hygiene.

The main agent (harness: started unconfigured, behind nginx's agent
listener) is configured by the seed flow here; the other cases start agents
of their own (harness.Agent) and stop them, checking a clean exit (the
sanitizer build). The minute of 5-second tokens runs in threads from
AgentLifetimeStart to AgentLifetimeResult, while the cases in between run
(none of them stops the crypto-server)."""

import contextlib
import json
import os
import re
import stat
import sys
import threading
import time
from datetime import datetime

import harness
from harness import EXTRA_RESOURCE, Agent, CryptoServer, free_port, http

from .base import Base
from .currency_base import RFC3339_RE, CurrencyBase, bearer
from .hygiene import string_values
from .seed_e2e import curl

ISO_SECONDS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}")
# one element of the crypto-server's list, as it writes it (no spaces)
RATE_RAW_RE = re.compile(rb'\{"symbol":"([A-Z0-9]+)","name":"[^"]*","rate":([^,]+),'
                         rb'"last_updated":"([^"]+)"\}')

# The main agent's client, once the seed flow has configured it; the cases
# that reconfigure the main agent put it back with restore_main().
SEED = {}


def parse_ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def log_events(agent, event=None):
    out = []
    for line in agent.log_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and (event is None or ev.get("event") == event):
            out.append(ev)
    return out


def metric(text_or_dict, name):
    if isinstance(text_or_dict, dict):
        return text_or_dict.get(name, 0.0)
    m = re.search(rf"^{re.escape(name)} (\S+)$", text_or_dict, re.M)
    return float(m.group(1)) if m else None


def token_route(auth, status):
    return auth.metrics().get(
        f'auth_http_requests_total{{route="/api/auth/token",status="{status}"}}', 0.0)


class AgentBase(Base):
    """Fails at once when the stack's agent did not start; helpers."""

    def setUp(self):
        s = self.s
        if s.agent is None:
            self.fail(f"crypto-client did not start: {s.agent_error}")
        if not s.agent.alive():
            self.fail(f"crypto-client ({s.agent.name}) is not running; log tail:\n"
                      f"{s.agent.log_text()[-2000:]}")
        self.replies = []  # every agent reply of the case, checked for secrets

    # ---- talking to agents ---------------------------------------------------

    def ng(self, method, path, body=None, headers=None, **kw):
        """Through nginx's agent listener (the seed's :8001)."""
        r = http(method, self.s.nginx.agent_port, path, body=body, headers=headers, **kw)
        self.replies.append(r)
        return r

    def direct(self, agent, method, path, body=None, headers=None, **kw):
        r = http(method, agent.port, path, body=body, headers=headers, **kw)
        self.replies.append(r)
        return r

    def status_of(self, agent=None):
        r = self.direct(agent or self.s.agent, "GET", "/api/status")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def configure(self, body, agent=None, status=200):
        """POST /api/configure (direct, or through nginx for the main agent)."""
        if isinstance(body, dict) and isinstance(body.get("client_secret"), str):
            self.s.secrets.add(body["client_secret"])
        r = self.direct(agent, "POST", "/api/configure", body) if agent else \
            self.ng("POST", "/api/configure", body)
        self.assertEqual(r.status, status, f"configure {body!r} -> {r!r}")
        return r

    def restore_main(self):
        """The main agent back on the seed flow's client."""
        if not SEED:
            return
        self.configure({"client_id": SEED["client_id"], "client_secret": SEED["secret"]})
        r = self.ng("POST", "/api/login")
        self.assertEqual(r.status, 200, f"login after restoring the seed client: {r!r}")

    @contextlib.contextmanager
    def extra_agent(self, name, env=None, **kw):
        """An agent of this case's own; stopped at the end, exit 0 required."""
        ag = Agent(self.s, name, env_overrides=env, **kw)
        try:
            ag.start()
        except Exception:
            ag.stop(timeout=5)
            raise
        try:
            yield ag
        finally:
            code = ag.stop()
        self.assertCleanExit(ag, code)

    def assertCleanExit(self, svc, code):
        self.assertEqual(code, 0, f"{svc.kind} ({svc.name}) exit code after SIGTERM; log tail:\n"
                                  f"{svc.log_text()[-3000:]}")
        self.assertEqual(svc.sanitizer_findings(), [], f"sanitizer report in {svc.log_path}")
        self.assertIn('"event":"stopped"', svc.log_text(), f"no stopped line in {svc.log_path}")

    def registered(self, name):
        """A self-registered client (currency:read): (client_id, secret)."""
        return self.s.new_client(name)

    def remember_state_secret(self, agent):
        """The secret an agent keeps in its state file (generated at
        registration) joins the secrets the hygiene cases look for."""
        doc = json.loads(agent.state_file.read_text())
        if doc.get("client_secret"):
            self.s.secrets.add(doc["client_secret"])
        return doc

    # ---- assertions ----------------------------------------------------------

    def assertAgentError(self, r, status, code, ctx="", field=None, words=()):
        """A JSON error with a description; `field` when given; never a 500."""
        doc = self.assertJsonError(r, status, code, ctx)
        desc = doc.get("error_description")
        self.assertIsInstance(desc, str, f"{ctx}: no error_description: {r!r}")
        self.assertTrue(desc.strip(), f"{ctx}: empty error_description")
        for w in words:
            self.assertIn(w, desc, f"{ctx}: the description should name {w!r}: {desc!r}")
        if field is not None:
            self.assertEqual(doc.get("field"), field, f"{ctx} -> {r!r}")
        self.assertTrue(r.header("X-Request-Id"), f"{ctx}: no X-Request-Id: {r!r}")
        return doc

    def envelope(self, r, ctx="", stale=False):
        """A 200 {stale, age_seconds, fetched_at, [stale_reason], data}:
        returns (document, data as the raw bytes of the reply)."""
        msg = f"{ctx} -> {r!r}"
        self.assertEqual(r.status, 200, msg)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), msg)
        doc = r.json()
        self.assertIsInstance(doc, dict, msg)
        self.assertIs(doc.get("stale"), stale, msg)
        self.assertIsInstance(doc.get("age_seconds"), int, msg)
        self.assertGreaterEqual(doc["age_seconds"], 0, msg)
        self.assertRegex(doc.get("fetched_at", ""), ISO_SECONDS_RE, msg)
        self.assertLess(abs(parse_ts(doc["fetched_at"]) - time.time()), 3600, msg)
        expected = {"stale", "age_seconds", "fetched_at", "data"}
        if stale:
            expected.add("stale_reason")
            self.assertIsInstance(doc.get("stale_reason"), str, msg)
            self.assertTrue(doc["stale_reason"].strip(), msg)
            self.assertEqual(r.header("Age"), str(doc["age_seconds"]), f"Age header: {msg}")
        else:
            self.assertEqual(doc["age_seconds"], 0, msg)
            self.assertIsNone(r.header("Age"), f"a fresh reply has no Age header: {msg}")
        self.assertEqual(set(doc), expected, msg)
        head, sep, rest = r.body.partition(b',"data":')
        self.assertTrue(sep and rest.endswith(b"}"), f"data is not the last member: {msg}")
        raw = rest[:-1]
        self.assertEqual(json.loads(raw), doc["data"], msg)
        return doc, raw

    def assertNoSecretIn(self, replies, secrets):
        for r in replies:
            text = r.body.decode("utf-8", "replace") + "\n" + \
                "\n".join(f"{k}: {v}" for k, v in (r.headers.items() if r.headers else []))
            for sec in secrets:
                self.assertNotIn(sec, text, f"a reply of the agent holds a client secret: {r!r}")
            self.assertIsNone(JWT_RE.search(text), f"a reply of the agent holds a token: {r!r}")

    def tearDown(self):
        # The secrets of the run never appear in what any agent answered.
        secrets = [x for x in self.s.secrets if x and len(x) >= 10]
        self.assertNoSecretIn(getattr(self, "replies", []), secrets)


# ---------------------------------------------------------------------------


class AgentSeedFlow(AgentBase, CurrencyBase):
    """The seed's client lines with curl through nginx's agent listener, on
    the main agent (started unconfigured)."""

    def setUp(self):
        AgentBase.setUp(self)
        CurrencyBase.setUp(self)

    def agent_url(self, path):
        return f"http://127.0.0.1:{self.s.nginx.agent_port}{path}"

    def test_01_unconfigured(self):
        s = self.s
        st = self.status_of()
        self.assertFalse(st["configured"], f"the main agent should start unconfigured: {st}")
        self.assertIsNone(st["client_id"], st)
        self.assertFalse(st["authenticated"], st)
        for method, path in [("POST", "/api/register"), ("POST", "/api/login"),
                             ("GET", "/api/currencies"), ("GET", "/api/currencies/BTC"),
                             ("GET", "/api/currencies/eth")]:
            with self.subTest(path=path):
                r = self.ng(method, path)
                self.assertAgentError(r, 409, "not_configured", f"{method} {path} unconfigured",
                                      words=("client_id", "/api/configure"))
        # and the same directly
        r = self.direct(s.agent, "POST", "/api/register")
        self.assertAgentError(r, 409, "not_configured", "register direct", words=("client_id",))
        r = self.ng("GET", "/api/health")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ok", "configured": False, "authenticated": False})
        self.assertEqual(self.status_of()["counts"]["token_requests"], 0)

    def test_02_seed_flow_with_curl(self):
        s = self.s
        cid = s.uid("agent-seed")
        st0 = self.status_of()
        self.assertFalse(st0["configured"], "test_01 leaves the main agent unconfigured")

        # configure: a client id only (the seed's client registers with a
        # secret the auth-service generates)
        status, headers, body = curl(
            f"curl -X POST {self.agent_url('/api/configure')} "
            f"-H \"Content-Type: application/json\" -d '{json.dumps({'client_id': cid})}'")
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc, {"configured": True, "client_id": cid, "server_url": s.issuer,
                               "has_secret": False})
        # no secret yet: login names what to do
        r = self.ng("POST", "/api/login")
        self.assertAgentError(r, 409, "not_configured", "login without a secret",
                              words=(cid, "/api/register"))

        # the seed's register line: no body at all
        status, headers, body = curl(f"curl -X POST {self.agent_url('/api/register')}")
        self.assertEqual(status, 201, body)
        self.assertRegex(headers.get("x-request-id", [""])[0], r"^[0-9a-f]{32}$", headers)
        doc = json.loads(body)
        self.assertIs(doc.get("registered"), True, doc)
        self.assertEqual(doc.get("client_id"), cid, doc)
        self.assertEqual(doc.get("scope"), "currency:read", doc)
        self.assertNotIn("client_secret", doc, "the generated secret must stay in the agent")
        state = self.remember_state_secret(s.agent)
        secret = state["client_secret"]
        self.assertGreaterEqual(len(secret), 40, "a generated 256-bit secret")
        self.assertNotIn(secret.encode(), body)
        self.assertEqual(stat.S_IMODE(os.stat(s.agent.state_file).st_mode), 0o600)
        SEED.update(client_id=cid, secret=secret)
        # the auth-service really holds that secret
        self.assertToken(s.token_post(cid, secret), "the agent's generated secret")

        # login: a token now, described, never shown
        status, headers, body = curl(f"curl -X POST {self.agent_url('/api/login')}")
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertEqual(set(doc), {"authenticated", "token_type", "expires_at", "expires_in",
                                    "renew_at", "scope"}, doc)
        self.assertIs(doc["authenticated"], True)
        self.assertEqual(doc["token_type"], "Bearer")
        self.assertEqual(doc["scope"], "currency:read")
        self.assertTrue(895 <= doc["expires_in"] <= 900, doc)
        self.assertRegex(doc["expires_at"], ISO_SECONDS_RE)
        self.assertRegex(doc["renew_at"], ISO_SECONDS_RE)
        exp, renew = parse_ts(doc["expires_at"]), parse_ts(doc["renew_at"])
        self.assertLess(abs(exp - time.time() - 900), 5, doc)
        # 900 s: renewed at 80 % (earlier than 30 s before exp)
        self.assertAlmostEqual(exp - renew, 180, delta=1.5, msg=doc)
        self.assertIsNone(JWT_RE.search(body.decode()), "login shows the token")

        # the rates, with curl; data byte for byte the crypto-server's
        status, headers, body = curl(f"curl {self.agent_url('/api/currencies')}")
        self.assertEqual(status, 200, body)
        env = json.loads(body)
        self.assertIs(env["stale"], False, env)
        self.assertIsInstance(env["data"], list)
        by = {o["symbol"]: o for o in env["data"]}
        self.assertIn("BTC", by)
        self.assertGreaterEqual(len(by), 10)
        for path in ["/api/currencies/BTC", "/api/currencies/btc", "/api/currencies/eTh"]:
            with self.subTest(path=path):
                status, headers, body = curl(f"curl {self.agent_url(path)}")
                self.assertEqual(status, 200, body)
                env = json.loads(body)
                self.assertIs(env["stale"], False)
                self.assertEqual(env["data"]["symbol"], path.rsplit("/", 1)[1].upper(), env)
                self.assertRate(env["data"], ctx=path)

        st = self.status_of()
        self.assertTrue(st["configured"] and st["has_secret"] and st["authenticated"], st)
        self.assertEqual(st["client_id"], cid)
        self.assertIsNone(st["last_error"], st)
        self.assertFalse(st["credentials_refused"])
        self.assertEqual(st["counts"]["api_retries"], 0, st)
        self.assertGreaterEqual(st["counts"]["token_requests"], 1, st)
        self.assertRegex(st["last_renewal"], ISO_SECONDS_RE)
        self.assertEqual(st["token"]["scope"], "currency:read", st)
        self.assertRegex(st["currencies"]["last_fetch"], ISO_SECONDS_RE)
        self.assertIs(st["currencies"]["stale"], False)

    def exact_as_direct(self, agent_path, cs_path, token):
        """The agent's data is the crypto-server's reply byte for byte: two
        agent calls around a direct one; when the two agent replies are equal
        (no tick in between), the direct one must be equal too."""
        last = None
        for _ in range(30):
            a1 = self.envelope(self.ng("GET", agent_path), agent_path)[1]
            d = http("GET", self.cs.port, cs_path, headers=bearer(token))
            self.assertEqual(d.status, 200, d)
            a2 = self.envelope(self.ng("GET", agent_path), agent_path)[1]
            if a1 == a2:
                self.assertEqual(a1, d.body, f"{agent_path}: the agent's data differs from "
                                             f"the crypto-server's reply")
                return a1
            last = (a1[:200], a2[:200])
            time.sleep(0.05)
        self.fail(f"{agent_path}: no two equal agent replies in a row (a tick between every "
                  f"pair?): {last}")

    def test_03_exact_decimals(self):
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")
        token = self.read_token("agent-exact")
        raw = self.exact_as_direct("/api/currencies", "/api/currency/", token)
        rates = RATE_RAW_RE.findall(raw)
        self.assertGreaterEqual(len(rates), 10, raw[:500])
        # decimals kept as the server wrote them (no float round trip: at least
        # one rate has more than 6 significant digits after the point)
        self.assertTrue(any(len(r.split(b".")[-1]) > 6 for _, r, _ in rates), raw[:500])
        raw = self.exact_as_direct("/api/currencies/BTC", "/api/currency/BTC", token)
        self.assertTrue(raw.startswith(b'{"symbol":"BTC"'), raw)
        raw2 = self.exact_as_direct("/api/currencies/btc", "/api/currency/BTC", token)
        self.assertTrue(raw2.startswith(b'{"symbol":"BTC"'), raw2)

    def test_04_symbols(self):
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")
        for sym in ["ZZZZ", "NOPE1", "A"]:
            with self.subTest(sym=sym):
                r = self.ng("GET", f"/api/currencies/{sym}")
                self.assertAgentError(r, 404, "not_found", f"unknown {sym}", words=(sym.upper(),))
        for path in ["/api/currencies/B-T", "/api/currencies/ABCDEFGHIJK", "/api/currencies/B%20T",
                     "/api/currencies/%C3%A9", "/api/currencies/BTC%27%3B--",
                     "/api/currencies/B.T", "/api/currencies/B%2BT"]:
            with self.subTest(path=path):
                r = self.ng("GET", path)
                self.assertAgentError(r, 400, "invalid_request", path, words=("symbol",))
                r = self.direct(self.s.agent, "GET", path)
                self.assertAgentError(r, 400, "invalid_request", path, words=("symbol",))
        # a NUL: nginx refuses the request line itself; the agent, direct, the symbol
        self.assertAgentError(self.ng("GET", "/api/currencies/B%00"), 400, "invalid_request",
                              "%00 via nginx")
        self.assertAgentError(self.direct(self.s.agent, "GET", "/api/currencies/B%00"), 400,
                              "invalid_request", "%00 direct")
        # nothing above reached the crypto-server as an error
        st = self.status_of()
        self.assertIs(st["currencies"]["stale"], False, st)

    def test_05_client_id_from_the_environment(self):
        """AGENT_CLIENT_ID and no secret: register has one generated, the agent
        logs in with it; registering again is a conflict."""
        s = self.s
        cid = s.uid("agent-envid")
        with self.extra_agent("envid", {"AGENT_CLIENT_ID": cid, "AGENT_FETCH_INTERVAL": "0"}) as ag:
            st = self.status_of(ag)
            self.assertTrue(st["configured"])
            self.assertFalse(st["has_secret"])
            r = self.direct(ag, "GET", "/api/currencies/BTC")
            self.assertAgentError(r, 409, "not_configured", "no secret yet",
                                  words=("/api/register",))
            r = self.direct(ag, "POST", "/api/register")
            self.assertEqual(r.status, 201, r)
            self.assertNotIn("client_secret", r.json())
            self.remember_state_secret(ag)
            r = self.direct(ag, "POST", "/api/login")
            self.assertEqual(r.status, 200, r)
            self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"), "BTC after register")
            # registering again: the id is taken (by this agent itself)
            r = self.direct(ag, "POST", "/api/register")
            self.assertAgentError(r, 409, "conflict", "register twice", words=(cid,))
            # and the agent still works
            self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"), "BTC after the conflict")
            st = self.status_of(ag)
            self.assertTrue(st["has_secret"] and st["authenticated"], st)


class AgentSingleFlight(AgentBase, CurrencyBase):
    def setUp(self):
        AgentBase.setUp(self)
        CurrencyBase.setUp(self)

    def test_one_token_request_for_many_callers(self):
        """32 callers at once on an agent without a token: all served, one
        token request (the others wait for it)."""
        cid, secret = self.registered("agent-flight")
        with self.extra_agent("flight", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                                         "AGENT_FETCH_INTERVAL": "0",
                                         "AGENT_BLOCKING_THREADS": "32"}) as ag:
            n = 32
            barrier = threading.Barrier(n)
            out = [None] * n

            def call(i):
                barrier.wait(timeout=10)
                try:
                    out[i] = http("GET", ag.port, "/api/currencies/BTC", timeout=15)
                except OSError as e:
                    out[i] = e
            threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(timeout=30)
            for i, r in enumerate(out):
                self.assertIsInstance(r, harness.Resp, f"caller {i}: {r!r}")
                self.replies.append(r)
                self.envelope(r, f"caller {i}")
            st = self.status_of(ag)
            self.assertEqual(st["counts"]["token_requests"], 1, st)
            self.assertEqual(st["counts"]["api_calls"], n, st)
            self.assertEqual(st["counts"]["api_retries"], 0, st)


class AgentLifetimeStart(AgentBase):
    """Starts the minute of 5-second tokens (joined by AgentLifetimeResult)."""

    def test_started(self):
        run = lifetime_run(self.s)
        self.assertIsNone(run.error, run.error)
        self.assertEqual(run.first.status, 200, run.first)
        self.assertEqual(run.st0["counts"]["token_requests"], 1, run.st0)
        self.assertLessEqual(run.st0["token"]["expires_in"], 5, run.st0)


class AgentConfigure(AgentBase):
    """POST /api/configure: every refusal is a precise 400 (or 413, 415)
    that keeps the previous configuration."""

    def setUp(self):
        super().setUp()
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")
        self.restore_main()
        self.before_status = self.status_of()
        self.before_state = self.s.agent.state_file.read_bytes()

    def assertKept(self, ctx):
        st = self.status_of()
        for k in ("configured", "client_id", "server_url", "has_secret"):
            self.assertEqual(st[k], self.before_status[k], f"{ctx}: {k} changed: {st}")
        self.assertEqual(self.s.agent.state_file.read_bytes(), self.before_state,
                         f"{ctx}: the state file changed")

    def test_01_invalid_members_name_the_field(self):
        ok = SEED["client_id"]
        long_url = "http://" + "a" * 600 + ".example"
        cases = [
            ({}, "client_id"),
            ({"client_id": ""}, "client_id"),
            ({"client_id": None}, "client_id"),
            ({"client_id": 42}, "client_id"),
            ({"client_id": ["a"]}, "client_id"),
            ({"client_id": {"a": 1}}, "client_id"),
            ({"client_id": True}, "client_id"),
            ({"client_id": "bad id"}, "client_id"),
            ({"client_id": "-dash"}, "client_id"),
            ({"client_id": "x" * 129}, "client_id"),
            ({"client_id": "x'; DROP TABLE auth.clients;--"}, "client_id"),
            ({"client_id": 'robert"); --'}, "client_id"),
            ({"client_id": "a%00b"}, "client_id"),
            ({"client_id": "a/../b"}, "client_id"),
            ({"client_id": "cl\u00efent"}, "client_id"),
            ({"client_id": "\u5ba2\u6237"}, "client_id"),
            ({"client_id": "a\nb"}, "client_id"),
            ({"client_id": ok, "client_secret": "12345"}, "client_secret"),
            ({"client_id": ok, "client_secret": ""}, "client_secret"),
            ({"client_id": ok, "client_secret": "s" * 257}, "client_secret"),
            ({"client_id": ok, "client_secret": "abc\ndefgh"}, "client_secret"),
            ({"client_id": ok, "client_secret": "abc\u007fdefgh"}, "client_secret"),
            ({"client_id": ok, "client_secret": 12345678}, "client_secret"),
            ({"client_id": ok, "client_secret": ["x" * 10]}, "client_secret"),
            ({"client_id": ok, "server_url": "ftp://example.com"}, "server_url"),
            ({"client_id": ok, "server_url": "http://exa mple.com"}, "server_url"),
            ({"client_id": ok, "server_url": long_url}, "server_url"),
            ({"client_id": ok, "server_url": "http://127.0.0.1:8000/?q=1"}, "server_url"),
            ({"client_id": ok, "server_url": "http://127.0.0.1:8000/#frag"}, "server_url"),
            ({"client_id": ok, "server_url": ""}, "server_url"),
            ({"client_id": ok, "server_url": "127.0.0.1:8000"}, "server_url"),
            ({"client_id": ok, "server_url": "http://"}, "server_url"),
            ({"client_id": ok, "server_url": "http:///path"}, "server_url"),
            ({"client_id": ok, "server_url": "javascript:alert(1)"}, "server_url"),
            ({"client_id": ok, "server_url": "http://h\u00e9.example"}, "server_url"),
            ({"client_id": ok, "server_url": 8000}, "server_url"),
            ({"client_id": ok, "app_name": "n" * 129}, "app_name"),
            ({"client_id": ok, "app_name": "a\tb"}, "app_name"),
            ({"client_id": ok, "app_name": 7}, "app_name"),
            ({"client_id": ok, "scope": "currency:write"}, "scope"),
            ({"client_id": ok, "CLIENT_ID": ok}, "CLIENT_ID"),
            ({"client_id": ok, "resource": EXTRA_RESOURCE}, "resource"),
            ({"client_id": ok, "x'; DROP TABLE t;--": 1}, "x'; DROP TABLE t;--"),
        ]
        for body, field in cases:
            with self.subTest(body=repr(body)[:80]):
                r = self.ng("POST", "/api/configure", body)
                self.assertAgentError(r, 400, "invalid_request", f"configure {body!r}"[:200],
                                      field=field, words=(field[:20],))
        # the same directly (no nginx in between)
        r = self.direct(self.s.agent, "POST", "/api/configure", {"client_id": "bad id"})
        self.assertAgentError(r, 400, "invalid_request", "direct", field="client_id")
        self.assertKept("after the invalid members")
        self.assertEqual(self.ng("POST", "/api/login").status, 200, "login after refusals")
        self.envelope(self.ng("GET", "/api/currencies/BTC"), "BTC after refusals")

    def test_02_malformed_bodies(self):
        ok = SEED["client_id"]
        bodies = [
            "not json", "{", '{"client_id":', f'{{"client_id":"{ok}"}} trailing', "[]",
            f'["client_id", "{ok}"]', f'[{{"client_id":"{ok}"}}]', '"a string"', "null", "42",
            "true", "", " ", f'{{"client_id":"{ok}","client_id":"other"}}',
            f'{{"client_id":"{ok}","client_secret":"abcdefgh","client_secret":"ijklmnop"}}',
            '{"client_id":"a\\u0000b"}', "{" + '"a":{' * 70 + "}" * 71,
            b'{"client_id":"\xff\xfe"}', "{'client_id': 'single-quoted'}",
            '{"client_id":"x",}', "\ufeff{}",
        ]
        for body in bodies:
            with self.subTest(body=repr(body)[:60]):
                r = self.ng("POST", "/api/configure", body,
                            headers={"Content-Type": "application/json"})
                self.assertAgentError(r, 400, "invalid_request", f"body {body!r}"[:120])
        self.assertKept("after the malformed bodies")

    def test_03_content_type_and_size(self):
        ok = SEED["client_id"]
        good = json.dumps({"client_id": ok, "client_secret": SEED["secret"]})
        for ctype in [None, "text/plain", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", "application/jsonx",
                      "application/json-patch+json", "text/json"]:
            with self.subTest(ctype=ctype):
                headers = {"Content-Type": ctype} if ctype else {}
                r = self.ng("POST", "/api/configure", good, headers=headers)
                self.assertAgentError(r, 415, "unsupported_media_type", f"Content-Type {ctype}")
        # larger than AGENT_MAX_BODY (4096): the agent's 413, direct and via nginx
        big = json.dumps({"client_id": ok, "app_name": "a" * 5000})
        r = self.ng("POST", "/api/configure", big, headers={"Content-Type": "application/json"})
        self.assertAgentError(r, 413, "payload_too_large", "5 kB via nginx")
        r = self.direct(self.s.agent, "POST", "/api/configure", big,
                        headers={"Content-Type": "application/json"})
        self.assertAgentError(r, 413, "payload_too_large", "5 kB direct")
        r = self.direct(self.s.agent, "POST", "/api/configure", big,
                        headers={"Content-Type": "application/json"}, chunked=True)
        self.assertAgentError(r, 413, "payload_too_large", "5 kB chunked direct")
        # larger than nginx's limit: nginx's own JSON 413
        huge = json.dumps({"client_id": ok, "app_name": "a" * 200000})
        r = self.ng("POST", "/api/configure", huge, headers={"Content-Type": "application/json"})
        self.assertJsonError(r, 413, "payload_too_large", "200 kB via nginx")
        self.assertKept("after the content-type and size refusals")

    def test_04_accepted_forms(self):
        s = self.s
        ok, secret = SEED["client_id"], SEED["secret"]
        # charset parameter, upper-case media type, trailing slashes on the URL
        r = self.ng("POST", "/api/configure",
                    json.dumps({"client_id": ok, "client_secret": secret,
                                "server_url": s.issuer + "//", "app_name": None}),
                    headers={"Content-Type": "Application/JSON; charset=utf-8"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"configured": True, "client_id": ok, "server_url": s.issuer,
                                    "has_secret": True})
        self.assertEqual(self.ng("POST", "/api/login").status, 200)
        # the longest client id (128) and secret (256) are taken as they are
        long_id = "L" + "x" * 127
        long_secret = "S" * 256
        r = self.configure({"client_id": long_id, "client_secret": long_secret})
        self.assertEqual(r.json()["client_id"], long_id)
        state = json.loads(s.agent.state_file.read_text())
        self.assertEqual((state["client_id"], state["client_secret"]), (long_id, long_secret))
        # an unknown client: login is refused by the auth-service, not by the agent
        r = self.ng("POST", "/api/login")
        self.assertAgentError(r, 409, "invalid_client", "unknown long client id")
        # null secret = none: has_secret false
        r = self.configure({"client_id": ok, "client_secret": None})
        self.assertIs(r.json()["has_secret"], False)
        self.restore_main()
        self.assertEqual(self.status_of()["client_id"], ok)

    def test_05_state_file_cannot_be_written(self):
        """A configuration that cannot be saved is refused (503, not 500) and
        changes nothing; once the path is usable it is saved 0600 in a 0700
        directory the agent made."""
        s = self.s
        d = s.workdir / "agent-state" / f"unwritable-{os.urandom(3).hex()}"
        state = d / "sub" / "state.json"
        cid, secret = self.registered("agent-unwritable")
        with self.extra_agent("unwritable", {"AGENT_FETCH_INTERVAL": "0"},
                              state_file=state) as ag:
            d.write_text("a file where the agent wants a directory\n")
            r = self.configure({"client_id": cid, "client_secret": secret}, agent=ag, status=503)
            self.assertAgentError(r, 503, "temporarily_unavailable", "unwritable state")
            self.assertNotIn(str(d), r.body.decode(), "paths are for the log, not the caller")
            st = self.status_of(ag)
            self.assertFalse(st["configured"], st)
            self.assertTrue([e for e in log_events(ag, "state_write_failed")
                             if str(d) in json.dumps(e)], ag.log_text()[-2000:])
            d.unlink()
            self.configure({"client_id": cid, "client_secret": secret}, agent=ag)
            self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(state.parent).st_mode), 0o700)
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700)
            self.assertFalse(os.path.exists(str(state) + ".tmp"))
            self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"), "after saving")


class AgentRegister(AgentBase):
    def setUp(self):
        super().setUp()
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")

    def test_conflict_names_the_client(self):
        s = self.s
        cid, secret = self.registered("agent-taken")
        try:
            self.configure({"client_id": cid, "client_secret": secret})
            r = self.ng("POST", "/api/register")
            doc = self.assertAgentError(r, 409, "conflict", "register a taken id",
                                        words=(cid, "already", "/api/login"))
            self.assertNotIn(secret, json.dumps(doc))
            # the id is this agent's own (right secret): login works
            self.assertEqual(self.ng("POST", "/api/login").status, 200)
            # a taken id without a secret: conflict, and the agent stays without one
            self.configure({"client_id": cid})
            r = self.ng("POST", "/api/register")
            self.assertAgentError(r, 409, "conflict", "taken id, no secret", words=(cid,))
            self.assertFalse(self.status_of()["has_secret"])
            r = self.ng("GET", "/api/currencies/BTC")
            self.assertAgentError(r, 409, "not_configured", "no secret after the conflict")
        finally:
            self.restore_main()

    def test_register_with_a_chosen_secret(self):
        s = self.s
        cid = s.uid("agent-chosen")
        secret = "agent-chosen-" + os.urandom(10).hex()
        try:
            self.configure({"client_id": cid, "client_secret": secret, "app_name": "Chosen"})
            r = self.ng("POST", "/api/register")
            self.assertEqual(r.status, 201, r)
            doc = r.json()
            self.assertEqual((doc["client_id"], doc["app_name"]), (cid, "Chosen"))
            self.assertNotIn("client_secret", doc)
            self.assertEqual(self.ng("POST", "/api/login").status, 200)
            self.assertToken(s.token_post(cid, secret), "the chosen secret at the auth-service")
            (row,) = s.pg.query(f"SELECT app_name FROM auth.clients WHERE client_id = '{cid}'")
            self.assertEqual(row, ["Chosen"])
        finally:
            self.restore_main()


class AgentWrongSecret(AgentBase):
    """Refused credentials: 409 invalid_client, reported in /api/status, and
    no more token requests however often callers ask, until reconfigured."""

    def setUp(self):
        super().setUp()
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")

    def test_01_refused_then_recovered(self):
        s = self.s
        cid, secret = self.registered("agent-wrong")
        wrong = "wrong-secret-" + os.urandom(8).hex()
        try:
            self.configure({"client_id": cid, "client_secret": wrong})
            r = self.ng("POST", "/api/login")
            self.assertAgentError(r, 409, "invalid_client", "login, wrong secret",
                                  words=("/api/configure",))
            self.assertNotIn(wrong, r.body.decode())
            st = self.status_of()
            self.assertIs(st["credentials_refused"], True, st)
            self.assertIs(st["authenticated"], False, st)
            self.assertIsNone(st["token"], st)
            self.assertEqual(st["last_error"]["error"], "invalid_client", st)
            self.assertIn(cid, st["last_error"]["error_description"], st)
            self.assertRegex(st["last_error"]["at"], ISO_SECONDS_RE)
            r = http("GET", s.agent.metrics_port, "/metrics")
            self.assertEqual(metric(r.body.decode(), "agent_authenticated"), 0)

            refused0 = token_route(s.auth, 401)
            requests0 = st["counts"]["token_requests"]
            # callers keep calling: 409 invalid_client every time (what another
            # client fetched was dropped with the reconfiguration: it is not
            # this client's to serve), and never a new token request
            stale0 = st["counts"]["stale_served"]
            t_end = time.monotonic() + 3.0
            n = 0
            while time.monotonic() < t_end:
                for path in ("/api/currencies", "/api/currencies/BTC"):
                    r = self.ng("GET", path)
                    n += 1
                    self.assertAgentError(r, 409, "invalid_client", path)
                time.sleep(0.05)
            st = self.status_of()
            self.assertEqual(st["counts"]["token_requests"], requests0,
                             f"{n} calls with refused credentials sent token requests")
            self.assertEqual(token_route(s.auth, 401), refused0,
                             "the auth-service saw token requests after the refusal")
            self.assertIs(st["credentials_refused"], True)
            self.assertIsNone(st["currencies"]["last_fetch"], st)
            self.assertIs(st["currencies"]["stale"], False, st)
            self.assertEqual(st["counts"]["stale_served"], stale0, st)

            # the right secret: recovered at once
            self.configure({"client_id": cid, "client_secret": secret})
            doc, _ = self.envelope(self.ng("GET", "/api/currencies/BTC"), "after the fix")
            st = self.status_of()
            self.assertIs(st["credentials_refused"], False, st)
            self.assertIsNone(st["last_error"], st)
            self.assertIs(st["authenticated"], True, st)
            self.assertIs(st["currencies"]["stale"], False, st)
        finally:
            self.restore_main()

    def test_02_fresh_agent_wrong_secret(self):
        """No data yet: callers get 409 invalid_client; one token request in
        all, the fetcher included."""
        s = self.s
        cid, _ = self.registered("agent-wrong2")
        wrong = "wrong-secret-" + os.urandom(8).hex()
        s.secrets.add(wrong)
        with self.extra_agent("wrong2", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": wrong,
                                         "AGENT_FETCH_INTERVAL": "1"}) as ag:
            for _ in range(10):
                r = self.direct(ag, "GET", "/api/currencies")
                self.assertAgentError(r, 409, "invalid_client", "no cache, wrong secret",
                                      words=(cid,))
                time.sleep(0.2)
            st = self.status_of(ag)
            self.assertEqual(st["counts"]["token_requests"], 1, st)
            self.assertEqual(st["counts"]["api_calls"], 0, st)
            self.assertIs(st["credentials_refused"], True)
            # an explicit login asks again (once), and is refused again
            r = self.direct(ag, "POST", "/api/login")
            self.assertAgentError(r, 409, "invalid_client", "login")
            self.assertEqual(self.status_of(ag)["counts"]["token_requests"], 2)
            self.assertEqual(len(log_events(ag, "token_refused")), 2, ag.log_text()[-2000:])


class AgentRetryOn401(AgentBase, CurrencyBase):
    """A token the crypto-server refuses: one retry with a new token, then a
    clear error (or the last good data), never a loop; and once a fresh token
    was refused too, later calls are not retried with yet another one (the
    server refuses our tokens whatever their age: renewing on every call
    would only double the load on the token endpoint)."""

    def setUp(self):
        AgentBase.setUp(self)
        CurrencyBase.setUp(self)

    def call_counts(self, ag, path):
        before = self.status_of(ag)["counts"]
        t0 = time.monotonic()
        r = self.direct(ag, "GET", path)
        took = time.monotonic() - t0
        after = self.status_of(ag)["counts"]
        self.assertLess(took, 5.0, f"{path}: {took:.1f} s")
        return r, {k: after[k] - before[k] for k in after}

    def test_01_audience_the_server_refuses(self):
        s = self.s
        cid, secret = self.registered("agent-aud")
        with self.extra_agent("aud", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                                      "AGENT_RESOURCE": EXTRA_RESOURCE,
                                      "AGENT_FETCH_INTERVAL": "0"}) as ag:
            deltas = []
            for i in range(4):
                r, d = self.call_counts(ag, "/api/currencies/BTC")
                self.assertAgentError(r, 502, "bad_gateway", f"call {i}", words=("401",))
                deltas.append(d)
                if i == 0:  # first token, refused; a fresh one, refused too
                    self.assertEqual((d["api_retries"], d["api_calls"]), (1, 2), f"call {i}: {d}")
                    self.assertEqual(d["token_requests"], 2, f"call {i}: {d}")
                else:  # that token is known refused: one send, no new token
                    self.assertEqual((d["api_retries"], d["api_calls"]), (0, 1), f"call {i}: {d}")
                    self.assertEqual(d["token_requests"], 0, f"call {i}: {d}")
            print(f"\n[agent] 401 on every call: per call {deltas}", file=sys.stderr)
            st = self.status_of(ag)
            self.assertIs(st["currencies"]["stale"], False)  # nothing fetched yet
            self.assertIn("401", st["currencies"]["upstream_error"] or "", st)
            self.assertEqual(st["counts"]["token_failures"], 0, st)
            # the idle agent sends nothing by itself
            time.sleep(1.0)
            self.assertEqual(self.status_of(ag)["counts"], st["counts"])

    def test_02_server_starts_refusing_after_success(self):
        """The same crypto-server address, first accepting the agent's tokens,
        then (another instance, another audience) refusing them: the last good
        data is served stale, one retry per call."""
        s = self.s
        cid, secret = self.registered("agent-401")
        port, mport = free_port(), free_port()
        first = CryptoServer(s, "agent401-ok", port=port, metrics_port=mport)
        second = None
        try:
            first.start()
            with self.extra_agent("r401", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                                           "AGENT_FETCH_INTERVAL": "0",
                                           "AGENT_CURRENCY_URL":
                                               f"http://127.0.0.1:{port}/api/currency"}) as ag:
                good, raw = self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"), "BTC")
                self.assertEqual(self.status_of(ag)["counts"]["api_retries"], 0)
                code = first.stop()
                self.assertCleanExit(first, code)
                second = CryptoServer(s, "agent401-aud", {"CURRENCY_AUDIENCE": EXTRA_RESOURCE},
                                      port=port, metrics_port=mport).start()
                for i in range(3):
                    r, d = self.call_counts(ag, "/api/currencies/BTC")
                    doc, raw2 = self.envelope(r, f"stale after 401, call {i}", stale=True)
                    self.assertEqual(raw2, raw, "the last good data, unchanged")
                    self.assertIn("401", doc["stale_reason"], doc)
                    want = (1, 2, 1) if i == 0 else (0, 1, 0)  # retries, sends, new tokens
                    self.assertEqual((d["api_retries"], d["api_calls"], d["token_requests"]),
                                     want, f"call {i}: {d}")
                    self.assertEqual(d["stale_served"], 1, d)
                # a symbol never fetched: the error itself
                r, d = self.call_counts(ag, "/api/currencies/ETH")
                self.assertAgentError(r, 502, "bad_gateway", "ETH, refused", words=("401",))
                self.assertEqual((d["api_retries"], d["api_calls"]), (0, 1), d)
                # the crypto-server saw two requests for the first call, one for each other
                refused = sum(v for k, v in second.metrics().items()
                              if k.startswith("currency_http_requests_total")
                              and 'status="401"' in k)
                self.assertEqual(refused, 5, "2 for the first BTC call, 1 for each of the 3 others")
        finally:
            for x in (first, second):
                if x is not None and x.proc is not None and x.returncode is None:
                    code = x.stop()
                    self.assertCleanExit(x, code)


class AgentFetcher(AgentBase, CurrencyBase):
    def setUp(self):
        AgentBase.setUp(self)
        CurrencyBase.setUp(self)

    def test_one_rate_line_per_symbol_per_interval(self):
        s = self.s
        cid, secret = self.registered("agent-fetch")
        token = self.read_token("agent-fetch-direct")
        seen = {}  # (symbol, last_updated) -> the rate's text in the server's reply
        window = 4.5
        with self.extra_agent("fetch1", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                                         "AGENT_FETCH_INTERVAL": "1"}) as ag:
            t_end = time.monotonic() + window
            while time.monotonic() < t_end:
                d = http("GET", self.cs.port, "/api/currency/", headers=bearer(token))
                self.assertEqual(d.status, 200, d)
                for sym, rate, upd in RATE_RAW_RE.findall(d.body):
                    seen[(sym.decode(), upd.decode())] = rate.decode()
                time.sleep(0.08)
        symbols = {k[0] for k in seen}
        lines = log_events(ag, "rate")
        self.assertTrue(lines, ag.log_text()[-2000:])
        per = {}
        for ev in lines:
            self.assertEqual(set(ev) - {"ts", "level", "service", "event", "request_id"},
                             {"symbol", "rate", "last_updated"}, ev)
            self.assertEqual(ev["level"], "info")
            self.assertIsInstance(ev["rate"], str, f"the rate as text: {ev}")
            self.assertRegex(ev["rate"], r"^[0-9]+(\.[0-9]+)?$", ev)
            self.assertRegex(ev["last_updated"], RFC3339_RE, ev)
            per.setdefault(ev["symbol"], []).append(ev)
        self.assertEqual(set(per), symbols, "one line per symbol the crypto-server has")
        counts = {k: len(v) for k, v in per.items()}
        n = counts["BTC"]
        self.assertTrue(all(c == n for c in counts.values()), counts)
        # about one fetch a second over the window (ASan: allow slack)
        self.assertGreaterEqual(n, 3, counts)
        self.assertLessEqual(n, int(window) + 2, counts)
        ts = [parse_ts(ev["ts"]) for ev in per["BTC"]]
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        self.assertTrue(all(0.9 <= g <= 2.5 for g in gaps), f"BTC lines {gaps} s apart")
        # the exact text: every line whose tick was sampled directly
        matched = 0
        for ev in lines:
            text = seen.get((ev["symbol"], ev["last_updated"]))
            if text is not None:
                matched += 1
                self.assertEqual(ev["rate"], text, f"{ev} vs the crypto-server's {text}")
        self.assertGreaterEqual(matched, len(lines) // 2, f"only {matched} of {len(lines)} lines "
                                                          f"matched a sampled tick")


class AgentEdge(AgentBase):
    """Request ids, unknown routes, methods, HEAD, /metrics."""

    def setUp(self):
        super().setUp()
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")
        self.restore_main()

    def test_01_request_id_end_to_end(self):
        s = self.s
        rid = f"agent-rid-{s.run_id}"
        r = self.ng("GET", "/api/currencies/BTC", headers={"X-Request-Id": rid})
        self.envelope(r, "BTC with a request id")
        self.assertEqual(r.headers.get_all("X-Request-Id"), [rid], r.headers)

        def line(svc):
            for ev in log_events(svc, "http_request"):
                if ev.get("request_id") == rid:
                    return ev
            return None
        ev, _ = self.wait_for(lambda: line(s.agent), 3.0, 0.1)
        self.assertIsNotNone(ev, "no agent access line with the request id")
        self.assertEqual((ev["route"], ev["status"]), ("/api/currencies/*", 200), ev)
        # the agent forwards it to the crypto-server
        ev, _ = self.wait_for(lambda: line(s.currency), 3.0, 0.1)
        self.assertIsNotNone(ev, "the crypto-server did not see the caller's request id")
        self.assertEqual(ev["status"], 200, ev)
        # generated by nginx when absent; direct, the agent makes its own
        r = self.ng("GET", "/api/status")
        self.assertRegex(r.header("X-Request-Id") or "", r"^[0-9a-f]{32}$")
        r = self.direct(s.agent, "GET", "/api/status", headers={"X-Request-Id": "direct-1"})
        self.assertEqual(r.header("X-Request-Id"), "direct-1")
        r = self.direct(s.agent, "GET", "/api/status")
        self.assertTrue(r.header("X-Request-Id"))

    def test_02_unknown_routes_and_methods(self):
        s = self.s
        for path in ["/api/nope", "/api/currencies/BTC/extra", "/api/currency/BTC", "/",
                     "/api", "/api/", "/docs/", "/api/status/x", "/api/configure/x",
                     "/.well-known/oauth-authorization-server", "/api/auth/token"]:
            with self.subTest(path=path):
                self.assertAgentError(self.ng("GET", path), 404, "not_found", f"GET {path}")
                self.assertAgentError(self.direct(s.agent, "GET", path), 404, "not_found",
                                      f"direct GET {path}")
        for method, path, allow in [
                ("DELETE", "/api/status", "GET"), ("POST", "/api/status", "GET"),
                ("PUT", "/api/currencies", "GET"), ("POST", "/api/currencies/BTC", "GET"),
                ("DELETE", "/api/currencies/BTC", "GET"), ("GET", "/api/configure", "POST"),
                ("PUT", "/api/configure", "POST"), ("GET", "/api/register", "POST"),
                ("GET", "/api/login", "POST"), ("PATCH", "/api/health", "GET")]:
            with self.subTest(method=method, path=path):
                for r in (self.ng(method, path), self.direct(s.agent, method, path)):
                    self.assertAgentError(r, 405, "method_not_allowed", f"{method} {path}")
                    self.assertEqual(r.header("Allow"), allow, r)
        # HEAD: answered without a body, never an error of the server
        for path in ["/api/status", "/api/health", "/api/currencies/BTC"]:
            with self.subTest(head=path):
                for r in (self.ng("HEAD", path), self.direct(s.agent, "HEAD", path)):
                    self.assertEqual(r.body, b"", r)
                    self.assertIn(r.status, (200, 405), r)
                    self.assertTrue((r.header("Content-Type") or "").startswith(
                        "application/json"), r)
                    if r.status == 405:
                        self.assertIn("GET", r.header("Allow") or "", r)
        # the configuration was not touched by any of this
        self.assertEqual(self.status_of()["client_id"], SEED["client_id"])

    def test_03_metrics_internal_only(self):
        s = self.s
        for path in ["/metrics", "/metrics/", "/metricsx", "/metrics?x=1"]:
            with self.subTest(path=path):
                r = self.ng("GET", path)
                self.assertJsonError(r, 404, "not_found", f"nginx {path}")
                self.assertNotIn(b"agent_", r.body)
        self.assertAgentError(self.direct(s.agent, "GET", "/metrics"), 404, "not_found",
                              "API port /metrics")
        self.envelope(self.ng("GET", "/api/currencies/BTC"), "BTC")
        st = self.status_of()
        r = http("GET", s.agent.metrics_port, "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/plain"), r)
        text = r.body.decode()
        for name, kind in [("agent_token_requests_total", "counter"),
                           ("agent_token_failures_total", "counter"),
                           ("agent_api_calls_total", "counter"),
                           ("agent_api_retries_total", "counter"),
                           ("agent_stale_replies_total", "counter"),
                           ("agent_upstream_failures_total", "counter"),
                           ("agent_registrations_total", "counter"),
                           ("agent_authenticated", "gauge")]:
            with self.subTest(metric=name):
                self.assertIn(f"# TYPE {name} {kind}", text)
                self.assertIsNotNone(metric(text, name), name)
        self.assertEqual(metric(text, "agent_token_requests_total"),
                         st["counts"]["token_requests"])
        self.assertEqual(metric(text, "agent_api_retries_total"), st["counts"]["api_retries"])
        self.assertGreaterEqual(metric(text, "agent_api_calls_total"), st["counts"]["api_calls"])
        self.assertEqual(metric(text, "agent_authenticated"), 1)
        self.assertGreaterEqual(metric(text, "agent_registrations_total"), 1)
        self.assertRegex(text, r'agent_http_requests_total\{route="/api/currencies/\*",'
                               r'status="200"\} [1-9]')
        self.assertEqual(http("GET", s.agent.metrics_port, "/health").status, 200)
        self.assertNotIn(SEED["secret"], text)


class AgentLifetimeResult(AgentBase):
    def test_a_minute_of_5s_tokens(self):
        run = lifetime_run(self.s)
        self.assertIsNone(run.error, run.error)
        run.join(self)
        calls = len(run.results)
        bad = [x for x in run.results if x[1] != 200]
        stale = [x for x in run.results if x[2]]
        d = {k: run.st1["counts"][k] - run.st0["counts"][k] for k in run.st0["counts"]}
        print(f"\n[agent] 5 s tokens, {run.duration:.0f} s: {calls} calls, {len(bad)} not 200, "
              f"{len(stale)} stale, {d['token_requests']} token requests "
              f"({run.duration / max(d['token_requests'], 1):.2f} s apart), "
              f"{d['api_retries']} retries", file=sys.stderr)
        self.assertGreaterEqual(calls, 300, "too few calls in the minute")
        self.assertEqual(bad, [], f"{len(bad)} of {calls} calls were not 200: {bad[:5]}")
        self.assertEqual(stale, [], f"{len(stale)} stale replies: {stale[:5]}")
        self.assertTrue(11 <= d["token_requests"] <= 20,
                        f"{d['token_requests']} token requests in {run.duration:.0f} s of 5 s "
                        f"tokens renewed at 80 % (expected ~{run.duration / 4:.0f})")
        self.assertEqual(d["token_failures"], 0, d)
        self.assertEqual(run.st1["counts"]["api_retries"], 0, run.st1)
        self.assertEqual(d["api_calls"], calls, d)
        obtained = log_events(run.agent, "token_obtained")
        self.assertTrue(obtained and all("lifetime 5s" in e.get("message", json.dumps(e))
                                         for e in obtained), obtained[:3])
        self.assertCleanExit(run.agent, run.code)


class AgentUpstreamDown(AgentBase, CurrencyBase):
    """The crypto-server stopped: the last good data, stale; back: fresh."""

    def setUp(self):
        AgentBase.setUp(self)
        CurrencyBase.setUp(self)
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")
        self.restore_main()

    def test_stale_while_the_crypto_server_is_away(self):
        s = self.s
        cid, secret = self.registered("agent-stale")
        with self.extra_agent("stale", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                                        "AGENT_FETCH_INTERVAL": "0"}) as ag:
            # the extra agent has fetched BTC only; the main one everything
            self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"), "extra BTC")
            rates_before = len(log_events(s.agent, "rate"))
            _, all_raw = self.envelope(self.ng("GET", "/api/currencies"), "main all")
            _, btc_raw = self.envelope(self.ng("GET", "/api/currencies/BTC"), "main BTC")
            stale0 = self.status_of()["counts"]["stale_served"]
            old = s.currency
            code = old.stop()
            self.assertCleanExit(old, code)
            # the main agent's fetcher (every 10 s) may have refreshed its cache
            # between the calls above and the stop
            refetched = len(log_events(s.agent, "rate")) != rates_before
            try:
                t_stop = time.monotonic()
                r = self.ng("GET", "/api/currencies")
                doc, raw = self.envelope(r, "all, crypto-server stopped", stale=True)
                if not refetched:
                    self.assertEqual(raw, all_raw, "the last good data, byte for byte")
                age1 = doc["age_seconds"]
                doc, raw = self.envelope(self.ng("GET", "/api/currencies/btc"), "BTC stopped",
                                         stale=True)
                if not refetched:
                    self.assertEqual(raw, btc_raw, "BTC: the last good BTC reply")
                self.assertIn("crypto-server", doc["stale_reason"], doc)
                st = self.status_of()
                self.assertIs(st["currencies"]["stale"], True, st)
                self.assertIn("crypto-server", st["currencies"]["upstream_error"] or "", st)
                self.assertGreaterEqual(st["counts"]["stale_served"], stale0 + 2)
                self.assertIs(st["authenticated"], True, "the token is not the problem")
                time.sleep(2.1)
                doc, _ = self.envelope(self.ng("GET", "/api/currencies"), "later", stale=True)
                self.assertGreaterEqual(doc["age_seconds"], age1 + 2, doc)
                self.assertLessEqual(doc["age_seconds"], time.monotonic() - t_stop + 30, doc)
                # the extra agent: BTC stale, what it never fetched 503
                doc, _ = self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"),
                                       "extra BTC stopped", stale=True)
                for path in ["/api/currencies/ETH", "/api/currencies"]:
                    with self.subTest(path=path):
                        r = self.direct(ag, "GET", path)
                        self.assertAgentError(r, 503, "temporarily_unavailable",
                                              f"{path} never fetched", words=("crypto-server",))
                        self.assertTrue(r.header("Retry-After"), r)
                # an unknown symbol cannot be told from a known one now: 503
                self.assertAgentError(self.ng("GET", "/api/currencies/ZZZZ"), 503,
                                      "temporarily_unavailable", "unknown while away")
                r = http("GET", s.agent.metrics_port, "/metrics")
                self.assertGreaterEqual(metric(r.body.decode(), "agent_stale_replies_total"), 3)
            finally:
                s.start_currency_again(old)
            ok, took = self.wait_for(lambda: self.ng("GET", "/api/currencies").status == 200 and
                                     self.ng("GET", "/api/currencies").json().get("stale") is False,
                                     10.0, 0.2)
            self.assertTrue(ok, "the main agent did not serve fresh data again")
            self.envelope(self.ng("GET", "/api/currencies/BTC"), "BTC back")
            st = self.status_of()
            self.assertIs(st["currencies"]["stale"], False, st)
            self.assertIsNone(st["currencies"]["upstream_error"], st)
            self.assertLessEqual(st["currencies"]["age_seconds"], 1, st)
            self.envelope(self.direct(ag, "GET", "/api/currencies/ETH"), "extra ETH back")

    def test_token_endpoint_unreachable(self):
        """No token to be had (the token endpoint refuses connections): 503
        naming the token endpoint, not the crypto-server; backed off, not a
        request per call."""
        s = self.s
        cid, secret = self.registered("agent-notoken")
        closed = free_port()
        with self.extra_agent("notoken", {
                "AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                "AGENT_FETCH_INTERVAL": "0",
                "AGENT_TOKEN_URL": f"http://127.0.0.1:{closed}/api/auth/token"}) as ag:
            for i in range(10):
                r = self.direct(ag, "GET", "/api/currencies/BTC")
                doc = self.assertAgentError(r, 503, "temporarily_unavailable", f"call {i}")
                self.assertNotIn("crypto-server", doc["error_description"],
                                 f"the crypto-server was never asked: {doc}")
                self.assertTrue(re.search(r"token|auth", doc["error_description"]), doc)
            st = self.status_of(ag)
            self.assertEqual(st["counts"]["api_calls"], 0, st)
            self.assertLessEqual(st["counts"]["token_requests"], 4,
                                 f"10 quick calls: backed off, not one token request each: {st}")
            self.assertIn("token endpoint", st["last_error"]["error_description"], st)
            self.assertIs(st["credentials_refused"], False)


class AgentRestart(AgentBase):
    def setUp(self):
        super().setUp()
        if not SEED:
            self.skipTest("the seed flow did not configure the main agent")
        self.restore_main()

    def test_01_restart_keeps_the_configuration(self):
        s = self.s
        old = s.agent
        self.envelope(self.ng("GET", "/api/currencies/BTC"), "before")
        code = old.stop()
        try:
            self.assertCleanExit(old, code)
            path = old.state_file
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(path.parent).st_mode), 0o700)
            doc = json.loads(path.read_text())
            self.assertEqual(doc, {"version": 1, "client_id": SEED["client_id"],
                                   "client_secret": SEED["secret"], "server_url": s.issuer,
                                   "app_name": "crypto-client"})
        finally:
            s.start_agent_again(old)
        t0 = time.monotonic()
        self.envelope(self.ng("GET", "/api/currencies/BTC"), "first call after the restart")
        self.assertLess(time.monotonic() - t0, 3.0)
        st = self.status_of()
        self.assertEqual((st["client_id"], st["has_secret"], st["authenticated"]),
                         (SEED["client_id"], True, True), st)
        self.assertTrue(log_events(s.agent, "state_loaded"), s.agent.log_text()[-2000:])

    def spawn_with_state(self, name, text, mode=0o600):
        d = self.s.workdir / "agent-state" / f"{name}-{os.urandom(3).hex()}"
        d.mkdir(parents=True, mode=0o700)
        path = d / "state.json"
        path.write_text(text)
        os.chmod(path, mode)
        return Agent(self.s, name, {"AGENT_FETCH_INTERVAL": "0"}, state_file=path), path

    def test_02_corrupt_state_file_refuses_to_start(self):
        for name, text in [
                ("corrupt-json", '{"version": 1, "client_id": "x", '),
                ("corrupt-empty", ""),
                ("corrupt-version", '{"version": 2, "client_id": "abc"}'),
                ("corrupt-array", '[1, 2]'),
                ("corrupt-member", '{"version": 1, "client_id": "bad id!"}'),
                ("corrupt-url", '{"version": 1, "client_id": "ok", "server_url": "ftp://x"}'),
                ("corrupt-secret", '{"version": 1, "client_id": "ok", "client_secret": 5}'),
                ("corrupt-dup", '{"version": 1, "client_id": "a", "client_id": "b"}')]:
            with self.subTest(name=name):
                ag, path = self.spawn_with_state(name, text)
                ag.spawn()
                try:
                    ag.proc.wait(timeout=15)
                except Exception:
                    pass
                code = ag.stop(timeout=5)
                log = ag.log_text()
                self.assertEqual(code, 2, f"{name}: exit code {code} (2: a configuration error); "
                                          f"log:\n{log[-1500:]}")
                self.assertIn(str(path), log, f"{name}: the message names the file")
                self.assertEqual(ag.sanitizer_findings(), [], log[-3000:])
                events = [e for e in log_events(ag) if e.get("level") == "error"]
                self.assertTrue(events, f"{name}: no error line: {log[-1500:]}")

    def test_03_state_file_readable_by_others_is_made_private(self):
        cid, secret = self.registered("agent-0644")
        ag, path = self.spawn_with_state(
            "mode0644", json.dumps({"version": 1, "client_id": cid, "client_secret": secret,
                                    "server_url": self.s.issuer, "app_name": "x"}), 0o644)
        ag.start()
        try:
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            self.envelope(self.direct(ag, "GET", "/api/currencies/BTC"), "from a 0644 state")
        finally:
            code = ag.stop()
        self.assertCleanExit(ag, code)


class AgentHygiene(AgentBase):
    """Late in the run: stops the main agent (exit 0, no sanitizer report)
    and reads every agent log of the run: JSON lines, no secret, no token."""

    def test_logs_after_sigterm(self):
        s = self.s
        main = s.agent
        code = main.stop()
        self.assertCleanExit(main, code)
        # the generated secret the main agent keeps is one to look for
        try:
            self.remember_state_secret(main)
        except (OSError, ValueError):
            pass
        secrets = {x for x in s.secrets if x}
        long_needles = [x for x in secrets if len(x) >= 10]
        short = [x for x in secrets if len(x) < 10]
        tokens = {t for t in s.tokens if len(t) >= 40}
        self.assertTrue(s.agent_logs)
        for path in s.agent_logs:
            if not path.exists():
                continue
            text = path.read_text("utf-8", "replace")
            with self.subTest(log=path.name):
                self.assertTrue(text.strip(), f"{path} is empty")
                for n, line in enumerate(text.splitlines(), 1):
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        self.fail(f"{path.name}:{n} is not JSON: {line[:300]!r}")
                    self.assertIsInstance(ev, dict, f"{path.name}:{n}")
                    for key in ("ts", "level", "service", "event"):
                        self.assertIn(key, ev, f"{path.name}:{n}: {line[:300]}")
                    self.assertEqual(ev["service"], "crypto-client", f"{path.name}:{n}")
                    for value in string_values(ev):
                        self.assertNotIn("Bearer ", value, f"{path.name}:{n}: {line[:300]}")
                        self.assertNotIn("Basic ", value, f"{path.name}:{n}: {line[:300]}")
                        for sec in short:
                            pattern = r"[=:'\"]\s?" + re.escape(sec) + r"(?![A-Za-z0-9_-])"
                            self.assertFalse(value == sec or re.search(pattern, value),
                                             f"{path.name}:{n} holds the secret {sec!r}")
                for sec in long_needles:
                    self.assertNotIn(sec, text, f"{path.name} contains a client secret")
                for tok in tokens:
                    self.assertNotIn(tok.rsplit(".", 1)[1], text, f"{path.name}: a token")
                m = JWT_RE.search(text)
                self.assertIsNone(m, f"{path.name} contains a JWT: {m and m.group(0)[:40]}")
                for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                    self.assertNotIn(marker, text)


# ---- the minute of 5-second tokens ------------------------------------------


class LifetimeRun:
    """An agent whose client's tokens live 5 s (auth-service CLI --ttl 5),
    called from a few threads for DURATION seconds."""

    DURATION = 60.0
    THREADS = 4
    PAUSE = 0.15

    def __init__(self, s):
        self.s = s
        self.error = None
        self.results = []  # (t, status, stale, body head)
        self.lock = threading.Lock()
        self.threads = []
        self.joined = False
        self.agent = None
        try:
            self._start()
        except Exception as e:  # reported by both classes
            self.error = f"{type(e).__name__}: {e}"
            if self.agent is not None:
                self.agent.stop(timeout=5)

    def _start(self):
        s = self.s
        cid = s.uid("agent-ttl5")
        p = s.cli_create("--id", cid, "--scopes", "currency:read", "--ttl", "5")
        if p.returncode != 0:
            raise RuntimeError(f"client create --ttl 5: {p.stderr}")
        secret = json.loads(p.stdout)["client_secret"]
        self.agent = Agent(s, "ttl5", {"AGENT_CLIENT_ID": cid, "AGENT_CLIENT_SECRET": secret,
                                       "AGENT_FETCH_INTERVAL": "0"})
        self.agent.start()
        self.first = http("GET", self.agent.port, "/api/currencies/BTC")
        if self.first.status != 200:
            raise RuntimeError(f"first call: {self.first!r}")
        self.st0 = self.agent.status()
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.DURATION
        for i in range(self.THREADS):
            t = threading.Thread(target=self._worker, name=f"ttl5-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _worker(self):
        while time.monotonic() < self.deadline:
            t = time.monotonic() - self.t0
            try:
                r = http("GET", self.agent.port, "/api/currencies/BTC", timeout=10)
                stale = None
                if r.status == 200:
                    try:
                        stale = r.json().get("stale")
                    except ValueError:
                        stale = "not JSON"
                rec = (round(t, 2), r.status, stale, r.body[:200])
            except OSError as e:
                rec = (round(t, 2), None, None, repr(e))
            with self.lock:
                self.results.append(rec)
            time.sleep(self.PAUSE)

    def join(self, case):
        if self.joined:
            return
        self.joined = True
        for t in self.threads:
            t.join(timeout=self.DURATION + 30)
        self.duration = time.monotonic() - self.t0
        case.assertFalse(any(t.is_alive() for t in self.threads), "load threads still running")
        self.st1 = self.agent.status()
        self.code = self.agent.stop()


_LIFETIME = None


def lifetime_run(s):
    global _LIFETIME
    if _LIFETIME is None:
        _LIFETIME = LifetimeRun(s)
    return _LIFETIME
