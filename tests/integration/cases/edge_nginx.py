"""The edge: nginx's TLS listener, headers, limits and errors (issue "The edge
and the package").

The stack's nginx (harness.Nginx) serves plain HTTP and TLS from one rendered
locations file; these cases check that both listeners serve the same thing,
that TLS is 1.2+ with modern ciphers and no session tickets, that HSTS is
sent over TLS only, and the edge's own answers: security headers on every
response, JSON bodies for 413/429/502/504/404/405, X-Request-Id echoed and
passed on, JSON access log lines, SSE unbuffered over TLS.

Cases that need a particular nginx (a tiny rate limit, an upstream that is
down or slow, a static directory) start their own from scripts/nginx-conf.sh,
beside the stack's, on free ports; an in-process HTTP server stands in for a
daemon where the test must see exactly what nginx sends upstream.

Already covered elsewhere, so not repeated here: the seed's curl lines and the
X-Request-Id in auth-service's log (seed_e2e), hostile requests through nginx
(hostile.HostileThroughNginx), the SSE stream over plain HTTP
(currency_api.CurrencyStream), /metrics not exposed (discovery.Metrics).
"""

import http.client as httpclient
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness
from harness import FORM, SCRIPTS, TICK_MS, Resp, form, free_port, http, run, wait_port

from .base import Base

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HSTS_MIN = 31536000  # one year: the least a preload-grade HSTS asks for
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
LOG_KEYS = {"time", "request_id", "remote_addr", "scheme", "method", "uri", "status", "bytes",
            "request_time", "upstream_response_time"}


# ---- TLS helpers ----------------------------------------------------------------


def tls_context(cafile, tweak=None):
    """A verifying client context that trusts only `cafile`."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if tweak:
        tweak(ctx)
    return ctx


class _TLSConnection(httpclient.HTTPSConnection):
    """HTTPS to 127.0.0.1 whatever the name checked (SNI and hostname check use
    `host`), so that "localhost" never resolves to an address nginx does not
    listen on."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._m2m_ctx.wrap_socket(sock, server_hostname=self.host)


def https(method, port, path, ctx, body=None, headers=None, host="localhost", timeout=10.0):
    """One request over TLS on a fresh connection; returns harness.Resp."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = _TLSConnection(host, port, timeout=timeout, context=ctx)
    conn._m2m_ctx = ctx
    start = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.headers, data, time.monotonic() - start)
    finally:
        conn.close()


def handshake(port, ctx, host="localhost", session=None):
    """(version, cipher name, session, reused) of one TLS handshake plus a
    request, so that TLS 1.3 session tickets/ids have arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host, session=session) as t:
            t.sendall(b"GET /api/auth/health HTTP/1.1\r\nHost: localhost\r\n"
                      b"Connection: close\r\n\r\n")
            while t.recv(65536):
                pass
            return t.version(), t.cipher()[0], t.session, t.session_reused


# ---- an nginx of the case's own ------------------------------------------------------


class EdgeNginx:
    """nginx rendered by scripts/nginx-conf.sh with the given options, on free
    ports (plain and TLS), in its own directory under the stack's workdir."""

    count = 0

    def __init__(self, *options, auth=None, currency=None):
        EdgeNginx.count += 1
        s = harness.STACK
        self.dir = s.workdir / f"edge-nginx-{EdgeNginx.count}"
        self.port = free_port()
        self.tls_port = free_port()
        self.cert = self.dir / "tls" / "cert.pem"
        auth = auth or s.auth.port
        currency = currency or s.currency_ports[0]
        run([SCRIPTS / "nginx-conf.sh", self.dir, "--listen", f"127.0.0.1:{self.port}",
             "--tls-listen", f"127.0.0.1:{self.tls_port}",
             "--auth", f"127.0.0.1:{auth}", "--currency", f"127.0.0.1:{currency}", *options],
            timeout=30)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.errlog = open(self.dir / "logs" / "stderr.log", "ab")
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-e",
                                      str(self.dir / "logs" / "error.log"), "-c",
                                      str(self.dir / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=self.errlog, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not (wait_port(self.port, 15) and wait_port(self.tls_port, 5)):
            self.stop()
            raise RuntimeError("edge nginx did not start; error.log:\n" +
                               (self.dir / "logs" / "error.log").read_text()[-2000:])
        self.ctx = tls_context(self.cert)

    def get(self, path, **kw):
        return http("GET", self.port, path, **kw)

    def tls(self, method, path, **kw):
        return https(method, self.tls_port, path, self.ctx, **kw)

    def access_lines(self):
        return (self.dir / "logs" / "access.log").read_text().splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.errlog.close()


class EchoUpstream:
    """A stand-in daemon: answers every request with a JSON echo of what it
    received (method, path, headers). A path containing /slow waits 3 s before
    answering; /api/currency/stream sends one event, then holds the stream
    open for 3 s before the second."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                seen = {"method": self.command, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()}}
                outer.requests.append(seen)
                if self.path.startswith("/api/currency/stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(2):
                        if i:
                            time.sleep(3)
                        ev = f"event: tick\ndata: {i}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if "/slow" in self.path:
                    time.sleep(3)
                body = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                # what a daemon might send that nginx must not duplicate
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # nginx hung up on a slow answer: expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    """A port nothing listens on (bound once, then released)."""
    return free_port()


class EdgeBase(Base):
    def assertSecurityHeaders(self, r, tls, ctx=""):
        msg = f"{ctx}: {r!r} headers {dict(r.headers)}"
        for name, value in SECURITY_HEADERS.items():
            self.assertEqual(r.headers.get_all(name), [value], f"{name}, {msg}")
        rid = r.headers.get_all("X-Request-Id") or []
        self.assertEqual(len(rid), 1, f"X-Request-Id once, {msg}")
        hsts = r.headers.get_all("Strict-Transport-Security") or []
        if tls:
            self.assertEqual(len(hsts), 1, f"HSTS once over TLS, {msg}")
            m = re.fullmatch(r"max-age=(\d+)", hsts[0])
            self.assertTrue(m and int(m.group(1)) >= HSTS_MIN, f"HSTS {hsts[0]!r}, {msg}")
        else:
            self.assertEqual(hsts, [], f"no HSTS over plain HTTP, {msg}")

    def edge(self, *options, **kw):
        n = EdgeNginx(*options, **kw)
        self.addCleanup(n.stop)
        return n

    def echo(self):
        e = EchoUpstream()
        self.addCleanup(e.stop)
        return e


# ---- the stack's own TLS listener -----------------------------------------------------


class EdgeTls(EdgeBase):
    """The TLS listener of the stack's nginx, with the certificate that
    scripts/tls-cert.sh made as the only trust root."""

    @property
    def port(self):
        return self.s.nginx.tls_port

    @property
    def cert(self):
        return self.s.nginx.tls_dir / "cert.pem"

    def ctx(self, tweak=None):
        return tls_context(self.cert, tweak)

    def test_certificate_is_local_and_private(self):
        key = self.s.nginx.tls_dir / "key.pem"
        self.assertEqual(key.stat().st_mode & 0o777, 0o600, "key.pem must be 0600")
        text = run(["openssl", "x509", "-in", self.cert, "-noout", "-text"]).stdout
        self.assertIn("prime256v1", text)  # P-256
        self.assertRegex(text, r"DNS:localhost")
        self.assertRegex(text, r"IP Address:127\.0\.0\.1")
        self.assertRegex(text, r"CA:FALSE")
        # made again only when needed: a second run reuses the pair as it is
        before = (self.cert.read_bytes(), key.read_bytes())
        p = run([SCRIPTS / "tls-cert.sh", self.s.nginx.tls_dir])
        self.assertIn("reusing", p.stderr)
        self.assertEqual((self.cert.read_bytes(), key.read_bytes()), before)

    def test_tls_serves_what_plain_serves(self):
        for path in ("/api/auth/jwks.json", "/.well-known/oauth-authorization-server",
                     "/api/auth/health"):
            with self.subTest(path):
                plain = self.s.nginx.get(path)
                for host in ("localhost", "127.0.0.1"):
                    r = https("GET", self.port, path, self.ctx(), host=host)
                    self.assertEqual(r.status, 200, f"{host} {path}: {r!r}")
                    self.assertEqual(r.header("Content-Type"), plain.header("Content-Type"))
                    if path != "/api/auth/health":
                        self.assertEqual(r.json(), plain.json(), path)
                    self.assertSecurityHeaders(r, True, f"TLS {path}")
                self.assertSecurityHeaders(plain, False, f"plain {path}")
        # error answers are the same too
        self.assertJsonError(https("GET", self.port, "/nope", self.ctx()), 404, "not_found")
        self.assertJsonError(https("GET", self.port, "/metrics", self.ctx()), 404, "not_found")

    def test_register_token_and_rates_over_tls(self):
        s = self.s
        cid, secret = s.uid("tls-client"), "tls-secret-" + time.strftime("%H%M%S")
        s.secrets.add(secret)
        r = https("POST", self.port, "/api/auth/register", self.ctx(),
                  body={"client_id": cid, "client_secret": secret, "app_name": "tls"})
        self.assertEqual(r.status, 201, r)
        r = https("POST", self.port, "/api/auth/token", self.ctx(),
                  body=form({"grant_type": "client_credentials", "client_id": cid,
                             "client_secret": secret}), headers=FORM)
        tok = self.assertToken(r, "token over TLS")
        s.tokens.add(tok["access_token"])
        self.assertSecurityHeaders(r, True, "token over TLS")
        if s.currency is None:
            self.skipTest(f"crypto-server did not start: {s.currency_error}")
        r = https("GET", self.port, "/api/currency/BTC", self.ctx(),
                  headers={"Authorization": f"Bearer {tok['access_token']}"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["symbol"], "BTC")

    def test_untrusted_or_wrong_name_is_refused(self):
        with self.assertRaises(ssl.SSLCertVerificationError):
            handshake(self.port, ssl.create_default_context())  # system roots only
        with self.assertRaises(ssl.SSLCertVerificationError):
            handshake(self.port, self.ctx(), host="m2m.example")

    def test_protocols_and_ciphers(self):
        v, cipher, _, _ = handshake(self.port, self.ctx())
        self.assertEqual(v, "TLSv1.3")

        def tls12(ctx):
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        v, cipher, _, _ = handshake(self.port, self.ctx(tls12))
        self.assertEqual(v, "TLSv1.2")
        self.assertRegex(cipher, r"^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")

        # TLS 1.0 and 1.1: the client is allowed to speak them (security level
        # 0), so a refusal is the server's: its protocol_version alert.
        for old in ("TLSv1", "TLSv1_1"):
            def legacy(ctx, old=old):
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                ctx.minimum_version = getattr(ssl.TLSVersion, old)
                ctx.maximum_version = getattr(ssl.TLSVersion, old)
            with self.subTest(old):
                with self.assertRaises(ssl.SSLError) as cm:
                    handshake(self.port, self.ctx(legacy))
                self.assertIn("ALERT_PROTOCOL_VERSION", str(cm.exception), cm.exception)

        # TLS 1.2 without forward secrecy or without AEAD: refused.
        for weak in ("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
                     "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA"):
            def weak_only(ctx, weak=weak):
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers(weak)
            with self.subTest(weak):
                with self.assertRaises(ssl.SSLError) as cm:
                    handshake(self.port, self.ctx(weak_only))
                self.assertIn("HANDSHAKE_FAILURE", str(cm.exception), cm.exception)

    def test_no_session_tickets_but_resumption(self):
        def tls12(ctx):
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx = self.ctx(tls12)
        _, _, session, reused = handshake(self.port, ctx)
        self.assertFalse(reused)
        self.assertFalse(session.has_ticket, "TLS 1.2 session tickets must be off")
        # resumption still works, from nginx's shared session cache
        _, _, _, reused = handshake(self.port, ctx, session=session)
        self.assertTrue(reused, "session not resumed from the server-side cache")

    def test_hsts_only_over_tls(self):
        for path, status in (("/api/auth/health", 200), ("/nope", 404),
                             ("/api/auth/nope", 404)):
            with self.subTest(path):
                r = https("GET", self.port, path, self.ctx())
                self.assertEqual(r.status, status, r)
                self.assertSecurityHeaders(r, True, f"TLS {path}")
                r = self.s.nginx.get(path)
                self.assertEqual(r.status, status, r)
                self.assertSecurityHeaders(r, False, f"plain {path}")
        agent_port = getattr(self.s.nginx, "agent_port", None)
        if agent_port and wait_port(agent_port, 0.2):
            r = http("GET", agent_port, "/metrics")
            self.assertSecurityHeaders(r, False, "agent listener")

    def test_plain_http_on_the_tls_port(self):
        r = http("GET", self.port, "/api/auth/health")
        self.assertJsonError(r, 400, "invalid_request", "plain HTTP to the TLS port")

    def test_forwarded_proto_is_https_over_tls(self):
        echo = self.echo()
        n = self.edge(auth=echo.port, currency=echo.port)
        r = n.get("/api/auth/whoami")
        self.assertEqual(r.json()["headers"].get("x-forwarded-proto"), "http", r)
        r = n.tls("GET", "/api/auth/whoami")
        self.assertEqual(r.status, 200, r)
        seen = r.json()["headers"]
        self.assertEqual(seen.get("x-forwarded-proto"), "https", seen)
        self.assertEqual(seen.get("x-forwarded-port"), str(n.tls_port), seen)
        self.assertEqual(seen.get("host"), f"localhost:{n.tls_port}", seen)
        self.assertEqual(seen.get("x-forwarded-for"), "127.0.0.1", seen)
        self.assertNotIn("strict-transport-security", seen)
        # the upstream's own X-Content-Type-Options is not doubled
        self.assertSecurityHeaders(r, True, "echo over TLS")

    def test_sse_over_tls_is_not_buffered(self):
        s = self.s
        if s.currency is None:
            self.skipTest(f"crypto-server did not start: {s.currency_error}")
        from .currency_base import CurrencyBase, bearer
        token = CurrencyBase.read_token("tls-sse")
        with harness.SSE(self.port, "/api/currency/stream", bearer(token), tls=self.ctx()) as st:
            self.assertEqual(st.status, 200, st.headers)
            self.assertEqual(st.header("content-type").split(";")[0], "text/event-stream")
            self.assertIsNotNone(st.header("strict-transport-security"), st.headers)
            first = st.next_event(3.0)
            self.assertIsNotNone(first, "no first event over TLS")
            self.assertEqual(first.get("event"), "rates", first)
            self.assertLess(first["t"], 1.5, "the first event must come at once")
            # a tick comes every TICK_MS; generous bound for a loaded box
            ev = st.next_event(8 * TICK_MS / 1000 + 2)
            self.assertIsNotNone(ev, "no tick event over TLS: buffered?")
            self.assertEqual(ev.get("event"), "rates", ev)

    def test_sse_first_event_not_held_back(self):
        # Deterministic, independent of the crypto-server: the echo stream
        # sends one event and then waits 3 s; a buffering proxy would hold the
        # first event until the stream ends or its buffer fills.
        echo = self.echo()
        n = self.edge(auth=echo.port, currency=echo.port)
        for port, tls in ((n.port, None), (n.tls_port, n.ctx)):
            with self.subTest("tls" if tls else "plain"):
                with harness.SSE(port, "/api/currency/stream", tls=tls) as st:
                    self.assertEqual(st.status, 200, st.headers)
                    ev = st.next_event(2.5)
                    self.assertIsNotNone(ev, "the first event was held back")
                    self.assertEqual(ev.get("data"), "0")
                    self.assertLess(ev["t"], 2.0)


# ---- headers, request ids, errors --------------------------------------------------------


class EdgeHeaders(EdgeBase):
    def test_security_headers_on_success_and_errors(self):
        s = self.s
        tls = s.nginx.tls_port
        ctx = tls_context(s.nginx.tls_dir / "cert.pem")
        s.secrets.add("wrong-edge")
        cases = [
            ("200 health", "GET", "/api/auth/health", None, {}, 200),
            ("401 from the daemon", "POST", "/api/auth/token",
             form({"grant_type": "client_credentials", "client_id": "nobody-edge",
                   "client_secret": "wrong-edge"}), FORM, 401),
            ("404 from the daemon", "GET", "/api/auth/nope", None, {}, 404),
            ("404 from nginx", "GET", "/nope", None, {}, 404),
            ("400 from nginx", "GET", "/api/auth/jwks.json%00", None, {}, 400),
            ("413 from nginx", "POST", "/api/auth/token", "a=" + "b" * 70000, FORM, 413),
        ]
        for name, method, path, body, headers, status in cases:
            with self.subTest(name):
                r = http(method, s.nginx_port, path, body=body, headers=headers)
                self.assertEqual(r.status, status, r)
                self.assertSecurityHeaders(r, False, f"plain {name}")
                r = https(method, tls, path, ctx, body=body, headers=headers)
                self.assertEqual(r.status, status, r)
                self.assertSecurityHeaders(r, True, f"TLS {name}")
                if status >= 400:
                    self.assertJsonError(r, status, None, f"TLS {name}")

    def test_413_json_for_an_oversized_body(self):
        s = self.s
        big = "client_id=x&client_secret=" + "s" * 70000
        ctx = tls_context(s.nginx.tls_dir / "cert.pem")
        for name, r in [
            ("Content-Length", http("POST", s.nginx_port, "/api/auth/token", big, FORM)),
            ("chunked", http("POST", s.nginx_port, "/api/auth/token", big, FORM, chunked=True)),
            ("register", http("POST", s.nginx_port, "/api/auth/register",
                              '{"x":"' + "a" * 70000 + '"}', {"Content-Type": "application/json"})),
            ("TLS", https("POST", s.nginx.tls_port, "/api/auth/token", ctx, big, FORM)),
        ]:
            with self.subTest(name):
                self.assertJsonError(r, 413, "payload_too_large", name)
        # under nginx's cap the daemon decides (its own cap is smaller)
        r = http("POST", s.nginx_port, "/api/auth/token", "a=" + "b" * 30000, FORM)
        self.assertJsonError(r, 413, None, "daemon's own cap")

    def test_request_id_echoed_and_passed_on(self):
        echo = self.echo()
        n = self.edge(auth=echo.port, currency=echo.port)
        for name, call in (("plain", lambda p, h: n.get(p, headers=h)),
                           ("tls", lambda p, h: n.tls("GET", p, headers=h))):
            with self.subTest(name):
                # a sane id is kept, echoed and sent upstream as it is
                r = call("/api/currency/x", {"X-Request-Id": f"edge-{name}-1"})
                self.assertEqual(r.headers.get_all("X-Request-Id"), [f"edge-{name}-1"])
                self.assertEqual(r.json()["headers"]["x-request-id"], f"edge-{name}-1")
                # none given: nginx's own, the same upstream and in the reply
                r = call("/api/auth/y", {})
                rid = r.header("X-Request-Id")
                self.assertRegex(rid or "", REQUEST_ID_RE)
                self.assertEqual(r.json()["headers"]["x-request-id"], rid)
                # an insane one is replaced, never passed on
                r = call("/api/auth/z", {"X-Request-Id": "a b\"{" + "x" * 200})
                rid = r.header("X-Request-Id")
                self.assertRegex(rid or "", REQUEST_ID_RE)
                self.assertEqual(r.json()["headers"]["x-request-id"], rid)
        # and on nginx's own errors (no upstream involved)
        r = n.get("/nope", headers={"X-Request-Id": "edge-404"})
        self.assertEqual(r.headers.get_all("X-Request-Id"), ["edge-404"])

    def test_request_id_reaches_the_currency_daemon(self):
        s = self.s
        if s.currency is None:
            self.skipTest(f"crypto-server did not start: {s.currency_error}")
        r = http("GET", s.nginx_port, "/api/currency/BTC", headers={"X-Request-Id": "edge-cur-7"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.header("X-Request-Id"), "edge-cur-7")

        def logged():
            for line in s.currency.log_text().splitlines():
                if "edge-cur-7" in line:
                    try:
                        return json.loads(line)
                    except ValueError:
                        continue
            return None
        ev, _ = self.wait_for(logged, 3.0, 0.1)
        self.assertIsNotNone(ev, "crypto-server logged no line with request_id edge-cur-7")
        self.assertEqual(ev.get("request_id"), "edge-cur-7", ev)


class EdgeErrors(EdgeBase):
    def test_429_json_from_limit_req(self):
        # 1 request a minute, no burst: the second one within the minute is
        # refused whatever the machine's speed. Plain and TLS share the zone.
        n = self.edge("--token-rate", "1r/m", "--token-burst", "0")
        bad = form({"grant_type": "client_credentials", "client_id": "edge-429",
                    "client_secret": "wrong-edge-429"})
        self.s.secrets.add("wrong-edge-429")
        r = http("POST", n.port, "/api/auth/token", bad, FORM)
        self.assertEqual(r.status, 401, r)  # the first one reaches the daemon
        for name, r in (("plain", http("POST", n.port, "/api/auth/token", bad, FORM)),
                        ("tls", n.tls("POST", "/api/auth/token", body=bad, headers=FORM))):
            with self.subTest(name):
                self.assertJsonError(r, 429, "rate_limited", name)
                self.assertEqual(r.header("Retry-After"), "60", r.headers)
                self.assertSecurityHeaders(r, name == "tls", f"429 {name}")
        # register has its own zone: one passes, the next is refused
        body = {"client_id": self.s.uid("edge-429"), "client_secret": "edge-429-secret"}
        self.s.secrets.add("edge-429-secret")
        r = http("POST", n.port, "/api/auth/register", body)
        self.assertEqual(r.status, 201, r)
        r = http("POST", n.port, "/api/auth/register", body)
        self.assertJsonError(r, 429, "rate_limited", "register")
        # other routes are not limited, and no daemon 4xx/5xx got a Retry-After
        for _ in range(3):
            r = n.get("/api/auth/health")
            self.assertEqual(r.status, 200, r)
            self.assertIsNone(r.header("Retry-After"))
        lines = [json.loads(ln) for ln in n.access_lines()]
        self.assertEqual([d["status"] for d in lines if d["uri"] == "/api/auth/token"],
                         [401, 429, 429])

    def test_502_json_when_the_upstreams_are_down(self):
        n = self.edge("--agent-listen", f"127.0.0.1:{free_port()}",
                      "--agent", f"127.0.0.1:{closed_port()}",
                      auth=closed_port(), currency=closed_port())
        for path in ("/api/auth/health", "/.well-known/oauth-authorization-server",
                     "/api/currency/", "/api/currency/stream"):
            with self.subTest(path):
                r = n.get(path)
                self.assertJsonError(r, 502, "bad_gateway", f"plain {path}")
                self.assertSecurityHeaders(r, False, f"502 {path}")
                r = n.tls("GET", path)
                self.assertJsonError(r, 502, "bad_gateway", f"TLS {path}")
                self.assertSecurityHeaders(r, True, f"502 TLS {path}")
        r = n.tls("POST", "/api/auth/token", body="grant_type=client_credentials",
                  headers=FORM)
        self.assertJsonError(r, 502, "bad_gateway", "POST token")

    def test_504_json_when_an_upstream_is_slow(self):
        echo = self.echo()
        n = self.edge("--upstream-timeout", "1", auth=echo.port, currency=echo.port)
        start = time.monotonic()
        r = n.get("/api/auth/slow")
        self.assertJsonError(r, 504, "gateway_timeout", "slow upstream")
        self.assertSecurityHeaders(r, False, "504")
        self.assertLess(time.monotonic() - start, 2.9, "answered by the timeout, not the upstream")
        r = n.tls("POST", "/api/currency/slow", body="{}")
        self.assertJsonError(r, 504, "gateway_timeout", "slow upstream over TLS")
        # the same nginx passes a quick answer as it is
        self.assertEqual(n.get("/api/auth/quick").status, 200)


# ---- static files, access log ---------------------------------------------------------------


class EdgeStaticAndLog(EdgeBase):
    @classmethod
    def setUpClass(cls):
        s = harness.STACK
        cls.static = s.workdir / "edge-static"
        (cls.static / "docs").mkdir(parents=True, exist_ok=True)
        (cls.static / "index.html").write_text("<!doctype html><title>m2m</title>dashboard\n")
        (cls.static / "docs" / "index.html").write_text("<!doctype html><title>docs</title>\n")
        (cls.static / "docs" / "auth-service.yaml").write_text("openapi: 3.1.0\n")
        cls.n = EdgeNginx("--static", cls.static)

    @classmethod
    def tearDownClass(cls):
        cls.n.stop()

    def test_static_docs_and_dashboard(self):
        n = self.n
        for name, call in (("plain", lambda m, p: http(m, n.port, p)),
                           ("tls", lambda m, p: n.tls(m, p))):
            with self.subTest(name):
                tls = name == "tls"
                r = call("GET", "/")
                self.assertEqual(r.status, 200, r)
                self.assertIn(b"dashboard", r.body)
                self.assertTrue(r.header("Content-Type").startswith("text/html"))
                self.assertSecurityHeaders(r, tls, f"{name} /")
                r = call("GET", "/docs/")
                self.assertEqual(r.status, 200, r)
                self.assertIn(b"<title>docs</title>", r.body)
                r = call("GET", "/docs")
                self.assertEqual(r.status, 301, r)
                self.assertEqual(r.header("Location"), "/docs/", "relative redirect")
                r = call("GET", "/docs/missing.js")
                self.assertJsonError(r, 404, "not_found", f"{name} missing file")
                self.assertSecurityHeaders(r, tls, f"{name} 404")
                r = call("POST", "/index.html")
                self.assertJsonError(r, 405, "method_not_allowed", f"{name} POST static")
                self.assertSecurityHeaders(r, tls, f"{name} 405")
                r = call("GET", "/metrics")
                self.assertJsonError(r, 404, "not_found", f"{name} /metrics")
                # the API is still the daemons'
                self.assertEqual(call("GET", "/api/auth/health").status, 200)

    def test_access_log_is_json(self):
        n = self.n
        http("GET", n.port, "/api/auth/health?access_token=edge-query-secret",
             headers={"User-Agent": 'edge "quoted" \\ agent', "X-Request-Id": "edge-log-1"})
        n.tls("POST", "/index.html", headers={"X-Request-Id": "edge-log-2"})
        http("GET", n.port, "/a%22b%5Cc/%E2%82%AC", headers={"X-Request-Id": "edge-log-3"})
        time.sleep(0.2)
        for label, lines in (("edge", n.access_lines()),
                             ("stack", (self.s.nginx.dir / "logs" / "access.log")
                              .read_text().splitlines())):
            with self.subTest(label):
                self.assertTrue(lines, f"{label}: empty access log")
                for line in lines:
                    doc = json.loads(line)  # every line is one JSON object
                    self.assertIsInstance(doc, dict, line)
                    self.assertLessEqual(LOG_KEYS, set(doc), line)
                    self.assertIsInstance(doc["status"], int, line)
                    self.assertNotIn("?", doc["uri"], f"query string logged: {line}")
        text = "\n".join(n.access_lines())
        self.assertNotIn("edge-query-secret", text)
        docs = {d["request_id"]: d for d in map(json.loads, n.access_lines())}
        self.assertEqual(docs["edge-log-1"]["uri"], "/api/auth/health")
        self.assertEqual(docs["edge-log-1"]["user_agent"], 'edge "quoted" \\ agent')
        self.assertEqual(docs["edge-log-1"]["scheme"], "http")
        # an error page is logged with the client's method and path
        self.assertEqual((docs["edge-log-2"]["method"], docs["edge-log-2"]["uri"],
                          docs["edge-log-2"]["status"], docs["edge-log-2"]["scheme"]),
                         ("POST", "/index.html", 405, "https"))
        self.assertEqual(docs["edge-log-3"]["uri"], "/a%22b%5Cc/%E2%82%AC")
        self.assertEqual(docs["edge-log-3"]["status"], 404)


class EdgeConfigScript(EdgeBase):
    """scripts/nginx-conf.sh itself: one locations file for both servers,
    the compose variant, --no-check, bad options."""

    def render(self, *args, check=True):
        out = self.s.workdir / f"edge-render-{time.monotonic_ns()}"
        p = run([SCRIPTS / "nginx-conf.sh", out, *args], check=check)
        return out, p

    def test_one_locations_file_for_plain_and_tls(self):
        out, _ = self.render("--listen", f"127.0.0.1:{free_port()}",
                             "--tls-listen", f"127.0.0.1:{free_port()}")
        conf = (out / "nginx.conf").read_text()
        self.assertEqual(conf.count("include m2m-locations.conf;"), 2, "plain + TLS")
        self.assertEqual(re.findall(r"(?m)^\s*location\s.*$", conf), [],
                         "every public location lives in m2m-locations.conf")
        self.assertNotIn("proxy_pass http://m2m_auth", conf)  # only in m2m-locations.conf
        self.assertIn("proxy_pass http://m2m_auth", (out / "m2m-locations.conf").read_text())
        self.assertIn("ssl_protocols TLSv1.2 TLSv1.3;", (out / "tls.conf").read_text())
        self.assertNotIn("{{", conf)

    def test_no_tls_unless_asked(self):
        out, _ = self.render("--listen", f"127.0.0.1:{free_port()}")
        conf = (out / "nginx.conf").read_text()
        self.assertNotIn(" ssl;", conf)
        self.assertEqual(conf.count("include m2m-locations.conf;"), 1)
        self.assertFalse((out / "tls").exists(), "no certificate made without --tls")

    def test_compose_variant_renders_without_resolving(self):
        out, p = self.render("--compose", "--no-check")
        conf = (out / "nginx.conf").read_text()
        loc = (out / "m2m-locations.conf").read_text()
        for needle in ("listen 0.0.0.0:8000;", "listen 0.0.0.0:8443 ssl;", "listen 0.0.0.0:8001;",
                       "server auth-service:9001;", "server crypto-server:9002;",
                       "server crypto-client:9003;", "ssl_certificate /etc/m2m/tls/cert.pem;",
                       "ssl_certificate_key /etc/m2m/tls/key.pem;",
                       "access_log /dev/stdout m2m_json;", "error_log stderr warn;"):
            self.assertIn(needle, conf)
        self.assertIn("root /srv/m2m-static;", loc)
        self.assertFalse((out / "tls").exists(), "--no-check makes no certificate")
        self.assertIn("not checked", p.stderr)
        # other options still apply on top of the compose defaults
        out, _ = self.render("--compose", "--no-check", "--no-limit", "--listen", "0.0.0.0:9000")
        conf = (out / "nginx.conf").read_text()
        self.assertIn("listen 0.0.0.0:9000;", conf)
        self.assertNotIn("limit_req_zone", conf)
        # and without --no-check the compose names do not resolve here
        _, p = self.render("--compose", check=False)
        self.assertNotEqual(p.returncode, 0)

    def test_bad_options_are_refused(self):
        for args in (["--tls-cert", "/nonexistent/cert.pem"],
                     ["--tls-cert", "/etc/hostname"],  # without --tls-key
                     ["--tls-listen", "nope"],
                     ["--hsts-max-age", "1y"],
                     ["--upstream-timeout", "0"],
                     ["--bogus"]):
            with self.subTest(args):
                _, p = self.render(*args, check=False)
                self.assertNotEqual(p.returncode, 0, args)
                self.assertIn("error", p.stderr)

    def test_given_certificate_is_used(self):
        tls = self.s.nginx.tls_dir
        out, _ = self.render("--listen", f"127.0.0.1:{free_port()}",
                             "--tls-cert", tls / "cert.pem", "--tls-key", tls / "key.pem")
        conf = (out / "nginx.conf").read_text()
        self.assertIn(f"ssl_certificate {tls}/cert.pem;", conf)
        self.assertFalse((out / "tls").exists())
