"""Bad input never gets a 5xx: every hostile request is a 4xx with a JSON body."""

import base64
import json
import socket

from harness import FORM, basic, form, http

from .base import Base

SQL = "x'; DROP TABLE auth.clients;--"
SQL2 = "' OR '1'='1"
JSON = {"Content-Type": "application/json"}


def raw_request(port, data, timeout=10):
    """Sends raw bytes; returns (status or None, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if b"\r\n\r\n" in b"".join(chunks):
                    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                    cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if cl and len(rest) >= int(cl[0].split(b":")[1]):
                        break
        except (socket.timeout, ConnectionResetError):
            pass
    resp = b"".join(chunks)
    if not resp.startswith(b"HTTP/1."):
        return None, resp
    return int(resp.split(b" ", 2)[1]), resp.partition(b"\r\n\r\n")[2]


class HostileInput(Base):
    @classmethod
    def setUpClass(cls):
        import harness
        cls.cid, cls.secret = harness.STACK.new_client("hostile")

    def cases(self):
        cid, secret = self.cid, self.secret
        tok = "/api/auth/token"
        reg = "/api/auth/register"
        deep_arr = b"[" * 5000 + b"]" * 5000
        deep_obj = b'{"a":' * 3000 + b"1" + b"}" * 3000
        deep_obj_ok_then_deep = b'{"client_id":"deep1","client_secret":"secret12","x":' + \
            b'{"a":' * 200 + b"1" + b"}" * 200 + b"}"
        yield "token: SQL in every form field", "POST", tok, form(
            {"grant_type": SQL, "client_id": SQL, "client_secret": SQL, "scope": SQL,
             "resource": SQL}), FORM
        yield "token: SQL client_id/secret", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": SQL2, "client_secret": SQL2}), FORM
        yield "token: SQL scope", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret,
             "scope": "currency:read' OR 1=1--"}), FORM
        yield "token: SQL resource", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret,
             "resource": "http://x/'; DROP TABLE auth.clients;--"}), FORM
        yield "token: SQL in JSON", "POST", tok, json.dumps(
            {"client_id": SQL, "client_secret": SQL, "scope": SQL}), JSON
        yield "token: SQL in Basic", "POST", tok, form({"grant_type": "client_credentials"}), \
            {**FORM, "Authorization": basic(SQL, SQL2)}
        yield "token: SQL in username/password", "POST", tok, form(
            {"username": SQL, "password": SQL2}), FORM
        yield "token: %00 in client_id", "POST", tok, \
            f"grant_type=client_credentials&client_id={cid}%00x&client_secret={secret}", FORM
        yield "token: %00 in secret", "POST", tok, \
            f"grant_type=client_credentials&client_id={cid}&client_secret={secret}%00", FORM
        yield "token: %00 in key", "POST", tok, \
            f"grant_type=client_credentials&client_id={cid}&client_secret={secret}&sc%00pe=x", FORM
        yield "token: raw NUL in body", "POST", tok, \
            f"grant_type=client_credentials&client_id={cid}\0&client_secret={secret}", FORM
        yield "token: %00 in Basic", "POST", tok, form({"grant_type": "client_credentials"}), \
            {**FORM, "Authorization": "Basic " + base64.b64encode(
                f"{cid}%00:{secret}".encode()).decode()}
        yield "token: raw NUL in Basic", "POST", tok, form({"grant_type": "client_credentials"}), \
            {**FORM, "Authorization": "Basic " + base64.b64encode(
                f"{cid}\0:{secret}".encode()).decode()}
        yield "token: \\u0000 in JSON", "POST", tok, \
            '{"client_id":"%s\\u0000x","client_secret":"%s"}' % (cid, secret), JSON
        yield "token: 10 KB scope", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret,
             "scope": "a" * 10240}), FORM
        yield "token: 10 KB scope of many tokens", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret,
             "scope": " ".join(f"s{i}" for i in range(2500))[:10240]}), FORM
        yield "token: 10 KB client_id", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": "c" * 10240,
             "client_secret": secret}), FORM
        yield "token: 10 KB secret", "POST", tok, form(
            {"grant_type": "client_credentials", "client_id": cid,
             "client_secret": "s" * 10240}), FORM
        yield "token: 10 KB Basic", "POST", tok, form({"grant_type": "client_credentials"}), \
            {**FORM, "Authorization": basic(cid, "s" * 8000)}
        yield "token: 5 resources", "POST", tok, form(
            [("grant_type", "client_credentials"), ("client_id", cid), ("client_secret", secret)]
            + [("resource", "https://extra.example/api/ledger")] * 5), FORM
        yield "token: invalid UTF-8 in JSON", "POST", tok, \
            b'{"client_id":"\xff\xfe","client_secret":"\xc3\x28"}', JSON
        yield "token: invalid UTF-8 in form", "POST", tok, \
            b"grant_type=client_credentials&client_id=%ff%fe&client_secret=%c3%28", FORM
        yield "token: invalid UTF-8 in grant_type", "POST", tok, \
            b"grant_type=%ff%fe%c3%28&client_id=a&client_secret=b", FORM
        yield "token: invalid UTF-8 raw in form", "POST", tok, \
            b"grant_type=client_credentials&client_id=\xff\xfe&client_secret=\xc3\x28", FORM
        yield "token: deep JSON array", "POST", tok, deep_arr, JSON
        yield "token: deep JSON object", "POST", tok, deep_obj, JSON
        yield "token: 1000 form fields", "POST", tok, "&".join(f"f{i}=v" for i in range(1000)), FORM
        yield "token: 300 JSON members", "POST", tok, json.dumps(
            {f"k{i}": "v" for i in range(300)}), JSON
        yield "token: key without value", "POST", tok, "grant_type&client_id&client_secret", FORM
        yield "token: only separators", "POST", tok, "&&&===&&", FORM
        yield "token: Authorization Basic empty", "POST", tok, form(
            {"grant_type": "client_credentials"}), {**FORM, "Authorization": "Basic "}
        yield "token: Authorization garbage", "POST", tok, form(
            {"grant_type": "client_credentials"}), {**FORM, "Authorization": "\x01\x02garbage"}
        yield "register: SQL client_id", "POST", reg, json.dumps(
            {"client_id": SQL, "client_secret": SQL, "app_name": SQL}), JSON
        yield "register: SQL scope", "POST", reg, json.dumps(
            {"client_id": self.s.uid("sqlscope"), "client_secret": "secret12",
             "scope": "currency:read'; DROP TABLE auth.clients;--"}), JSON
        yield "register: \\u0000 in client_id", "POST", reg, \
            '{"client_id":"abc\\u0000def","client_secret":"secret12"}', JSON
        yield "register: \\u0000 in secret", "POST", reg, \
            '{"client_id":"%s","client_secret":"secret12\\u0000"}' % self.s.uid("nul2"), JSON
        yield "register: \\u0000 in app_name", "POST", reg, \
            '{"client_id":"%s","client_secret":"secret12","app_name":"a\\u0000"}' % \
            self.s.uid("nul3"), JSON
        yield "register: invalid UTF-8 in client_id", "POST", reg, \
            b'{"client_id":"\xff\xfe","client_secret":"secret12"}', JSON
        yield "register: invalid UTF-8 in app_name", "POST", reg, \
            b'{"client_id":"utf8bad","client_secret":"secret12","app_name":"\xc3\x28"}', JSON
        yield "register: lone surrogate escape", "POST", reg, \
            b'{"client_id":"sur","client_secret":"secret12","app_name":"\\ud800"}', JSON
        yield "register: 10 KB scope", "POST", reg, json.dumps(
            {"client_id": self.s.uid("bigscope"), "client_secret": "secret12",
             "scope": "currency:read " * 800}), JSON
        yield "register: deep JSON array", "POST", reg, deep_arr, JSON
        yield "register: deep JSON object", "POST", reg, deep_obj, JSON
        yield "register: nested 200 deep member", "POST", reg, deep_obj_ok_then_deep, JSON
        yield "register: huge number", "POST", reg, \
            b'{"client_id":"num","client_secret":1' + b"0" * 5000 + b"}", JSON
        yield "register: object as secret", "POST", reg, \
            b'{"client_id":"objsec","client_secret":{"a":"b"}}', JSON
        yield "register: bool as app_name", "POST", reg, \
            b'{"client_id":"boolname","client_secret":"secret12","app_name":true}', JSON
        yield "PROPFIND token", "PROPFIND", tok, None, {}
        yield "PROPFIND unknown", "PROPFIND", "/nope", None, {}
        yield "BREW /", "BREW", "/", None, {}
        yield "DELETE register", "DELETE", reg, None, {}
        yield "PATCH jwks", "PATCH", "/api/auth/jwks.json", "{}", JSON
        yield "OPTIONS token", "OPTIONS", tok, None, {}
        yield "path traversal", "GET", "/api/auth/../../etc/passwd", None, {}
        yield "encoded traversal", "GET", "/api/auth/%2e%2e/%2e%2e/etc/passwd", None, {}
        yield "%00 in path", "GET", "/api/auth/jwks.json%00", None, {}
        yield "invalid UTF-8 in path", "GET", "/api/auth/%ff%fe", None, {}
        yield "long path 8 KB", "GET", "/api/auth/" + "a" * 8000, None, {}
        yield "query string on token", "POST", tok + "?client_id=x&client_secret=y", \
            form({"grant_type": "client_credentials"}), FORM
        yield "bad X-Request-Id", "GET", "/api/auth/nope", None, \
            {"X-Request-Id": "a" * 500 + "\"}{"}
        yield "Content-Type garbage", "POST", tok, "x", {"Content-Type": "\x01;;;===;"}
        yield "Content-Type 200 chars", "POST", tok, "x", \
            {"Content-Type": "application/x-www-form-urlencoded" + "a" * 200}

    def test_hostile_requests_get_4xx_json(self):
        port = self.s.auth.port
        for name, method, path, body, headers in self.cases():
            with self.subTest(name):
                r = http(method, port, path, body=body, headers=headers, timeout=10)
                self.assertGreaterEqual(r.status, 400, f"{name}: {r!r}")
                self.assertLess(r.status, 500, f"{name}: {r!r}")
                self.assertJsonError(r, r.status, None, name)
        self.assertTrue(self.s.auth.alive(), "auth-service died")
        self.assertEqual(self.s.auth.get("/api/auth/health").status, 200)
        # the table survived every attempt
        self.assertEqual(self.s.pg.query("SELECT to_regclass('auth.clients') IS NOT NULL"),
                         [["t"]])

    def test_sql_metacharacters_are_data(self):
        # A valid registration whose app_name is SQL is stored verbatim.
        cid = self.s.uid("sqlname")
        r = self.s.register({"client_id": cid, "client_secret": "secret12",
                             "app_name": "Robert'); DROP TABLE auth.clients;--"})
        self.assertEqual(r.status, 201, r)
        (row,) = self.s.pg.query(f"SELECT app_name FROM auth.clients WHERE client_id = '{cid}'")
        self.assertEqual(row, ["Robert'); DROP TABLE auth.clients;--"])

    def test_huge_header_431(self):
        r = http("GET", self.s.auth.port, "/api/auth/health",
                 headers={"X-Big": "a" * 40 * 1024}, timeout=10)
        self.assertGreaterEqual(r.status, 400, r)
        self.assertLess(r.status, 500, r)
        self.assertEqual(r.status, 431, r)
        # many headers adding up to 40 KB
        many = {f"X-H{i}": "b" * 400 for i in range(100)}
        r = http("GET", self.s.auth.port, "/api/auth/health", headers=many, timeout=10)
        self.assertIn(r.status, (400, 431), r)
        self.assertTrue(self.s.auth.alive())

    def test_malformed_http_is_4xx(self):
        port = self.s.auth.port
        for name, data in [
            ("bad Content-Length", b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: abc\r\n\r\n"),
            ("negative Content-Length", b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: -5\r\n\r\n"),
            ("two Content-Lengths", b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            ("bad chunk size", b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
            ("garbage request line", b"\x00\x01\x02 / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]:
            with self.subTest(name):
                status, body = raw_request(port, data)
                if status is not None:
                    self.assertGreaterEqual(status, 400, f"{name}: {status} {body[:200]!r}")
                    self.assertLess(status, 500, f"{name}: {status} {body[:200]!r}")
        self.assertTrue(self.s.auth.alive(), "auth-service died")
        self.assertEqual(self.s.auth.get("/api/auth/health").status, 200)


class HostileThroughNginx(Base):
    """The public face: what nginx answers itself must be JSON too (design.md
    §3: every error is JSON with the right status)."""

    def test_bad_requests_through_nginx_get_4xx_json(self):
        port = self.s.nginx_port
        for name, method, path, headers, body in [
            ("%00 in path", "GET", "/api/auth/jwks.json%00", {}, None),
            ("%00 in token path", "POST", "/api/auth/token%00", FORM, "grant_type=x"),
            ("40 KB header", "GET", "/api/auth/health", {"X-Big": "a" * 40960}, None),
            ("9 KB URI", "GET", "/api/auth/" + "a" * 9000, {}, None),
            ("PROPFIND token", "PROPFIND", "/api/auth/token", {}, None),
            ("body over nginx's cap", "POST", "/api/auth/token", FORM, "a=" + "b" * 70000),
            ("invalid UTF-8 in path", "GET", "/api/auth/%ff%fe", {}, None),
            ("SQL in path", "GET", "/api/auth/'%3B%20DROP%20TABLE%20auth.clients%3B--", {}, None),
        ]:
            with self.subTest(name):
                r = http(method, port, path, body=body, headers=headers, timeout=10)
                self.assertGreaterEqual(r.status, 400, f"{name}: {r!r}")
                self.assertLess(r.status, 500, f"{name}: {r!r}")
                self.assertJsonError(r, r.status, None, f"through nginx, {name}")
