"""What the crypto-server cases share: tokens, Bearer assertions, rate shapes."""

import json
import os
import re
import socket
import threading
import time
from datetime import datetime

import harness
from harness import TICK_MS, http

from .base import Base

TICK = TICK_MS / 1000.0
REALM = 'Bearer realm="crypto-server"'
SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,10}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def parse_time(s):
    """An RFC 3339 timestamp as Unix seconds (float)."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def rfc3339(t, ms=True):
    """Unix seconds -> 2026-11-22T10:00:00.123Z (UTC)."""
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return base + (f".{int((t % 1) * 1000):03d}Z" if ms else "Z")


class CurrencyBase(Base):
    """Fails every case at once when the stack's crypto-server did not start."""

    def setUp(self):
        s = self.s
        if s.currency is None:
            self.fail(f"crypto-server did not start: {s.currency_error}")
        if not s.currency.alive():
            self.fail(f"crypto-server ({s.currency.name}) is not running; log tail:\n"
                      f"{s.currency.log_text()[-2000:]}")

    @property
    def cs(self):
        return self.s.currency

    # ---- tokens -------------------------------------------------------------

    @staticmethod
    def read_token(name, extra=None):
        """A self-registered client's token (scope currency:read)."""
        s = harness.STACK
        cid, secret = s.new_client(name)
        r = s.token_post(cid, secret, extra)
        if r.status != 200:
            raise AssertionError(f"token for {cid}: {r!r}")
        return r.json()["access_token"]

    @staticmethod
    def operator_token(name, *args):
        """`auth-service client create --id ... ARGS`, then a token."""
        s = harness.STACK
        cid = s.uid(name)
        p = s.cli_create("--id", cid, *args)
        if p.returncode != 0:
            raise AssertionError(f"client create {cid} {args}: {p.stderr}")
        secret = json.loads(p.stdout)["client_secret"]
        r = s.token_post(cid, secret)
        if r.status != 200:
            raise AssertionError(f"token for {cid}: {r!r}")
        return r.json()["access_token"]

    @classmethod
    def admin_token(cls, name="cur-admin"):
        return cls.operator_token(name, "--role", "admin", "--scopes",
                                  "currency:read currency:write")

    # ---- assertions ---------------------------------------------------------

    def assertCleanExit(self, svc, code):
        """A daemon stopped with SIGTERM exits 0 with no sanitizer report."""
        self.assertEqual(code, 0, f"{svc.kind} ({svc.name}) exit code after SIGTERM; log tail:\n"
                                  f"{svc.log_text()[-3000:]}")
        self.assertEqual(svc.sanitizer_findings(), [], f"sanitizer report in {svc.log_path}")
        self.assertIn('"event":"stopped"', svc.log_text(), f"no stopped line in {svc.log_path}")

    def assertChallenge(self, r, status, error=None, scope=None, ctx=""):
        """An RFC 6750 answer: status, JSON error body, WWW-Authenticate with
        realm and (unless no credentials) error= and scope=."""
        msg = f"{ctx} -> {r!r}"
        www = r.header("WWW-Authenticate")
        self.assertIsNotNone(www, f"no WWW-Authenticate: {msg}")
        self.assertEqual(len(r.headers.get_all("WWW-Authenticate") or []), 1, msg)
        if error is None:
            self.assertEqual(r.status, 401, msg)
            self.assertEqual(www, REALM, f"a request without a token gets a bare challenge: {msg}")
            self.assertJsonError(r, 401, None, ctx)
            return
        doc = self.assertJsonError(r, status, error, ctx)
        self.assertTrue(www.startswith(REALM + ", "), f"WWW-Authenticate {www!r}: {msg}")
        self.assertIn(f'error="{error}"', www, msg)
        if scope is not None:
            self.assertIn(f'scope="{scope}"', www, msg)
            self.assertEqual(doc.get("scope"), scope, msg)
        return doc

    def assertRate(self, obj, symbol=None, ctx=""):
        msg = f"{ctx}: {obj!r}"
        self.assertIsInstance(obj, dict, msg)
        self.assertIsInstance(obj.get("symbol"), str, msg)
        self.assertRegex(obj["symbol"], SYMBOL_RE, msg)
        if symbol is not None:
            self.assertEqual(obj["symbol"], symbol, msg)
        rate = obj.get("rate")
        self.assertTrue(isinstance(rate, (int, float)) and not isinstance(rate, bool), msg)
        self.assertGreater(rate, 0, msg)
        self.assertIsInstance(obj.get("last_updated"), str, msg)
        self.assertRegex(obj["last_updated"], RFC3339_RE, msg)
        t = parse_time(obj["last_updated"])
        self.assertLess(abs(t - time.time()), 86400 * 365, f"last_updated far off: {msg}")
        return obj

    def assertRates(self, r, ctx=""):
        """200, application/json, an array of >= 10 distinct rates incl. BTC, ETH;
        returns {symbol: object}."""
        msg = f"{ctx} -> {r!r}"
        self.assertEqual(r.status, 200, msg)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), msg)
        doc = r.json()
        self.assertIsInstance(doc, list, msg)
        self.assertGreaterEqual(len(doc), 10, msg)
        by = {}
        for obj in doc:
            self.assertRate(obj, ctx=ctx)
            self.assertNotIn(obj["symbol"], by, f"symbol twice: {msg}")
            by[obj["symbol"]] = obj
        self.assertIn("BTC", by, msg)
        self.assertIn("ETH", by, msg)
        return by

    def assertOne(self, r, symbol, ctx=""):
        msg = f"{ctx} -> {r!r}"
        self.assertEqual(r.status, 200, msg)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), msg)
        return self.assertRate(r.json(), symbol, ctx)

    def get_all(self, token, via=None):
        target = via or self.cs
        return http("GET", target.port, "/api/currency/", headers=bearer(token))

    def rates(self, token, via=None):
        return self.assertRates(self.get_all(token, via), "GET /api/currency/")


# ---- a JWKS endpoint under the tests' control --------------------------------


class FakeJwks:
    """An HTTP listener standing in for the auth-service's JWKS: counts the
    requests, answers 503 while `down`, else the document in `body`."""

    def __init__(self, port=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/api/auth/jwks.json"
        self.down = True
        self.body = b""
        self.hits = []  # monotonic times of the requests
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def count(self, since=None):
        with self.lock:
            return len([t for t in self.hits if since is None or t >= since])

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(3)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            with self.lock:
                self.hits.append(time.monotonic())
            if self.down:
                body = b'{"error":"temporarily_unavailable"}'
                head = "HTTP/1.1 503 Service Unavailable\r\n"
            else:
                body = self.body
                head = "HTTP/1.1 200 OK\r\n"
            head += (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n")
            conn.sendall(head.encode("latin-1") + body)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(timeout=2)


def random_kid():
    return "forged-" + os.urandom(8).hex()
