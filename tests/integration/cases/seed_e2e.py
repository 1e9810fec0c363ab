"""End-to-end through real nginx with real curl: the seed's own lines."""

import json
import os
import subprocess

import harness
from harness import DEFAULT_AUDIENCE, jose_verify

from .base import Base

SEED_REGISTER = ("curl -X POST http://{host}/api/auth/register "
                 "-H \"Content-Type: application/json\" "
                 "-d '{{\"client_id\":\"test\",\"client_secret\":\"secret\",\"app_name\":\"Test\"}}'")
SEED_TOKEN = ("curl -X POST http://{host}/api/auth/token "
              "-H \"Content-Type: application/json\" "
              "-d '{{\"client_id\":\"test\",\"client_secret\":\"secret\"}}'")


def curl(line, extra=""):
    """Runs a seed curl line (through bash, as a user would) with options
    appended to capture status and headers. Returns (status, headers, body)."""
    out = harness.STACK.workdir / f"curl-{os.urandom(4).hex()}"
    cmd = (f"{line} -sS --max-time 10 -o {out}.body -D {out}.head "
           f"-w '%{{http_code}}' {extra}")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise AssertionError(f"curl failed ({p.returncode}): {p.stderr}\n{cmd}")
    status = int(p.stdout.strip())
    headers = {}
    for hl in open(f"{out}.head", encoding="latin-1").read().splitlines()[1:]:
        if ":" in hl:
            k, v = hl.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    body = open(f"{out}.body", "rb").read()
    return status, headers, body


class SeedCurlThroughNginx(Base):
    """The README's two curl lines, verbatim apart from host:port."""

    def test_01_seed_register_then_token(self):
        s = self.s
        if s.pg.shared:
            # A shared cluster may hold "test" from an earlier run: the seed's
            # line must meet a database where it does not exist yet.
            s.pg.exec("DELETE FROM auth.clients WHERE client_id = 'test'")
        s.secrets.add("secret")
        host = f"127.0.0.1:{s.nginx_port}"

        status, headers, body = curl(SEED_REGISTER.format(host=host))
        self.assertEqual(status, 201, body)
        doc = json.loads(body)
        self.assertEqual(doc["client_id"], "test")
        self.assertEqual(doc["app_name"], "Test")
        self.assertEqual(doc["scope"], "currency:read")
        self.assertNotIn("client_secret", doc, "a chosen secret must not be echoed")
        self.assertNotIn('"secret"', body.decode())
        self.assertTrue(headers["content-type"][0].startswith("application/json"))

        status, headers, body = curl(SEED_TOKEN.format(host=host))
        self.assertEqual(status, 200, body)
        tok = json.loads(body)
        self.assertEqual(tok["token_type"], "Bearer")
        self.assertEqual(tok["scope"], "currency:read")
        self.assertEqual(tok["expires_in"], 900)
        self.assertEqual(headers["cache-control"], ["no-store"])
        self.assertEqual(headers["pragma"], ["no-cache"])
        s.tokens.add(tok["access_token"])

        v = jose_verify([tok["access_token"]])["results"][0]
        self.assertTrue(v["ok"], v)
        self.assertEqual(v["payload"]["sub"], "test")
        self.assertEqual(v["payload"]["client_id"], "test")
        self.assertEqual(v["payload"]["aud"], DEFAULT_AUDIENCE)
        self.assertEqual(v["payload"]["iss"], s.issuer)

    def test_02_seed_register_again_is_409(self):
        status, headers, body = curl(SEED_REGISTER.format(host=f"127.0.0.1:{self.s.nginx_port}"))
        self.assertEqual(status, 409, body)
        doc = json.loads(body)
        self.assertEqual(doc["error"], "conflict")
        self.assertEqual(doc.get("field"), "client_id")

    def test_03_seed_token_wrong_secret_through_nginx(self):
        line = SEED_TOKEN.format(host=f"127.0.0.1:{self.s.nginx_port}").replace(
            '"client_secret":"secret"', '"client_secret":"wrong-secret"')
        status, headers, body = curl(line)
        self.assertEqual(status, 401, body)
        self.assertEqual(json.loads(body)["error"], "invalid_client")
        self.assertTrue(headers["www-authenticate"][0].startswith("Basic"), headers)


class RequestIdThroughNginx(Base):
    def find_log_line(self, rid, timeout=3.0):
        def look():
            for line in self.s.auth.log_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("request_id") == rid and ev.get("event") == "http_request":
                    return ev
            return None
        ev, _ = self.wait_for(look, timeout, 0.1)
        return ev

    def test_01_given_request_id_is_echoed_and_logged(self):
        host = f"127.0.0.1:{self.s.nginx_port}"
        status, headers, body = curl(SEED_TOKEN.format(host=host),
                                     extra="-H 'X-Request-Id: e2e-abc123'")
        self.assertEqual(status, 200, body)
        self.s.tokens.add(json.loads(body)["access_token"])
        self.assertEqual(headers.get("x-request-id"), ["e2e-abc123"], headers)
        ev = self.find_log_line("e2e-abc123")
        self.assertIsNotNone(ev, "no auth-service log line with request_id e2e-abc123")
        self.assertEqual(ev.get("route"), "/api/auth/token")
        self.assertEqual(ev.get("status"), 200)
        # nginx's own access line carries the same id
        access = self.s.nginx.dir / "logs" / "access.log"

        def nginx_line():
            for line in access.read_text().splitlines():
                doc = json.loads(line)
                if doc.get("request_id") == "e2e-abc123":
                    return doc
            return None
        doc, _ = self.wait_for(nginx_line, 3.0, 0.1)
        self.assertIsNotNone(doc, f"no nginx access line with request_id e2e-abc123 in {access}")
        self.assertEqual(doc["uri"], "/api/auth/token")
        self.assertEqual(doc["status"], 200)

    def test_01b_request_id_on_a_failed_request(self):
        # every line the daemon writes for a request carries its id
        status, headers, body = curl(
            SEED_TOKEN.format(host=f"127.0.0.1:{self.s.nginx_port}").replace(
                '"client_secret":"secret"', '"client_secret":"wrong-secret-e2e"'),
            extra="-H 'X-Request-Id: e2e-fail-42'")
        self.assertEqual(status, 401, body)
        self.assertEqual(headers.get("x-request-id"), ["e2e-fail-42"], headers)
        ev = self.find_log_line("e2e-fail-42")
        self.assertIsNotNone(ev, "no auth-service access line with request_id e2e-fail-42")
        self.assertEqual(ev.get("status"), 401)
        lines = [json.loads(ln) for ln in self.s.auth.log_text().splitlines()
                 if "e2e-fail-42" in ln]
        events = {ln.get("event") for ln in lines}
        self.assertIn("token_client_auth_failed", events, lines)
        self.assertTrue(all(ln.get("request_id") == "e2e-fail-42" for ln in lines), lines)

    def test_02_generated_request_id_is_echoed_and_logged(self):
        status, headers, body = curl(
            f"curl http://127.0.0.1:{self.s.nginx_port}/api/auth/health")
        self.assertEqual(status, 200, body)
        rid = headers.get("x-request-id", [""])
        self.assertEqual(len(rid), 1, headers)
        self.assertRegex(rid[0], r"^[0-9a-f]{32}$")
        self.assertIsNotNone(self.find_log_line(rid[0]),
                             f"no auth-service log line with request_id {rid[0]}")
