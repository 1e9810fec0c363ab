"""Daemon life cycle: default KDF cost, restarts, key files, a lost database."""

import os
import shutil
import stat
import time

from harness import AuthService, FORM, form, http, jose_verify

from .base import Base


class StoppedCleanly:
    """Mixin: a stopped auth-service exits 0 with no sanitizer report."""

    def assertStoppedCleanly(self, svc, code):
        self.assertEqual(code, 0, f"auth-service ({svc.name}) exit code after SIGTERM; log tail:\n"
                                  f"{svc.log_text()[-3000:]}")
        self.assertEqual(svc.sanitizer_findings(), [], f"sanitizer report in {svc.log_path}")


class FirstStart(Base):
    def test_first_start_on_empty_key_dir(self):
        """The main daemon's very first start (harness setup) created its key."""
        fs = self.s.first_start
        self.assertTrue(fs["ok"], f"auth-service failed its first start on an empty key "
                                  f"directory (exit {fs.get('code')}):\n{fs.get('error', '')[:3000]}")
        with open(fs["log"], encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.assertIn("keystore_key_created", text)
        # it created the directory (it did not exist) 0700 and the key 0600
        kd = self.s.key_dir
        self.assertEqual(stat.S_IMODE(os.stat(kd).st_mode), 0o700, kd)
        keys = [p for p in kd.iterdir() if p.name.endswith(".pem")]
        self.assertEqual(len(keys), 1, list(kd.iterdir()))
        self.assertEqual(stat.S_IMODE(os.stat(keys[0]).st_mode), 0o600, keys[0])


class DefaultKdfAndTtl(Base, StoppedCleanly):
    """A second daemon on the same database and a copy of the keys, with the
    default scrypt cost (AUTH_KDF_LOG_N unset = 15) and AUTH_ACCESS_TOKEN_TTL=300."""

    def test_default_kdf_cost_and_ttl_setting(self):
        s = self.s
        keys = s.workdir / "keys-kdf15"
        shutil.copytree(s.key_dir, keys)
        svc = AuthService(s, "kdf15", {"AUTH_KDF_LOG_N": None, "AUTH_ACCESS_TOKEN_TTL": "300"},
                          key_dir=keys).start()
        try:
            cid, secret = s.new_client("kdf15", via=svc)
            (row,) = s.pg.query(f"SELECT secret_hash FROM auth.clients WHERE client_id = '{cid}'")
            self.assertTrue(row[0].startswith("$scrypt$ln=15,"), row[0])
            t0 = time.monotonic()
            r = s.token_post(cid, secret, via=svc)
            first = time.monotonic() - t0
            doc = self.assertToken(r, "ln=15 client, ttl 300")
            self.assertEqual(doc["expires_in"], 300)
            self.assertLess(first, 5.0, "one scrypt verification at ln=15")
            # the second is served from the verified-secret cache
            t0 = time.monotonic()
            self.assertToken(s.token_post(cid, secret, via=svc))
            self.assertLess(time.monotonic() - t0, 1.0)
            res = jose_verify([doc["access_token"]],
                              jwks_url=f"http://127.0.0.1:{svc.port}/api/auth/jwks.json")
            self.assertTrue(res["results"][0]["ok"], res)
            p = res["results"][0]["payload"]
            self.assertEqual(p["exp"] - p["iat"], 300)
            # the hash carries its parameters: the ln=12 daemon reads it too
            doc = self.assertToken(s.token_post(cid, secret), "ln=15 hash on the ln=12 daemon")
            self.assertEqual(doc["expires_in"], 900)
        finally:
            code = svc.stop()
        self.assertStoppedCleanly(svc, code)


class Restart(Base, StoppedCleanly):
    def test_01_key_files_are_private(self):
        kd = self.s.key_dir
        self.assertEqual(stat.S_IMODE(os.stat(kd).st_mode), 0o700, kd)
        keys = [p for p in kd.iterdir() if p.name.endswith(".pem")]
        self.assertGreaterEqual(len(keys), 1, list(kd.iterdir()))
        for k in kd.iterdir():
            self.assertEqual(stat.S_IMODE(os.stat(k).st_mode), 0o600, k)
            self.assertTrue(stat.S_ISREG(os.stat(k).st_mode), k)

    def test_02_restart_keeps_keys_and_clients(self):
        s = self.s
        cid, secret = s.new_client("restart")
        before = self.assertToken(s.token_post(cid, secret))["access_token"]
        kids_before = s.nginx.get("/api/auth/jwks.json").json()["keys"]
        files_before = sorted(p.name for p in s.key_dir.iterdir())

        old, code = s.restart_main()
        self.assertStoppedCleanly(old, code)

        self.assertEqual(sorted(p.name for p in s.key_dir.iterdir()), files_before,
                         "key files changed across a restart")
        self.assertEqual(s.nginx.get("/api/auth/jwks.json").json()["keys"], kids_before)
        res = jose_verify([before])["results"][0]
        self.assertTrue(res["ok"], f"a token from before the restart: {res}")
        after = self.assertToken(s.token_post(cid, secret), "client registered before")
        res = jose_verify([after["access_token"]])["results"][0]
        self.assertTrue(res["ok"], res)
        self.assertEqual(res["header"]["kid"], jose_verify([before])["results"][0]["header"]["kid"])
        # the seed's client from the first test too
        r = s.token({"client_id": "test", "client_secret": "secret"})
        self.assertToken(r, "seed client after restart")

    def test_03_group_readable_key_refuses_to_start(self):
        s = self.s
        copy = s.workdir / "keys-0644"
        shutil.copytree(s.key_dir, copy)
        os.chmod(copy, 0o700)
        key = sorted(p for p in copy.iterdir() if p.name.endswith(".pem"))[-1]
        os.chmod(key, 0o644)
        svc = AuthService(s, "key0644", key_dir=copy).spawn()
        try:
            svc.proc.wait(timeout=20)
        except Exception:
            pass
        code = svc.stop(timeout=5)
        self.assertNotEqual(code, 0, "started with a 0644 key file")
        self.assertFalse(code < 0, f"killed by a signal ({code}) instead of refusing")
        self.assertIn(str(key), svc.log_text(), "no log line names the key file")
        self.assertEqual(svc.sanitizer_findings(), [], f"sanitizer report in {svc.log_path}")

    def test_04_open_key_dir_refuses_to_start(self):
        s = self.s
        copy = s.workdir / "keys-0755"
        shutil.copytree(s.key_dir, copy)
        os.chmod(copy, 0o755)
        svc = AuthService(s, "keydir0755", key_dir=copy).spawn()
        try:
            svc.proc.wait(timeout=20)
        except Exception:
            pass
        code = svc.stop(timeout=5)
        self.assertNotEqual(code, 0, "started with a 0755 key directory")
        self.assertIn(str(copy), svc.log_text())


class DatabaseDown(Base):
    def test_database_stopped_then_back(self):
        s = self.s
        cid, secret = s.new_client("dbdown")
        self.assertToken(s.token_post(cid, secret))
        self.assertToken(s.token_post(cid, secret))  # cached now
        other_id, other_secret = s.new_client("dbdown-uncached")
        health = f"http://127.0.0.1:{s.auth.port}/api/auth/health"

        s.pg.stop()
        try:
            last = {}

            def down():
                last["r"] = http("GET", s.auth.port, "/api/auth/health", timeout=5)
                return last["r"].status == 503
            ok, _ = self.wait_for(down, 5.0, 0.1)
            self.assertTrue(ok, f"{health} after the database stopped: {last.get('r')!r}")
            doc = self.assertJsonError(last["r"], 503, None, "health, database down")
            self.assertEqual(doc.get("database"), "down", doc)

            for what, (c, sec) in [("cached client", (cid, secret)),
                                   ("uncached client", (other_id, other_secret))]:
                with self.subTest(what):
                    t0 = time.monotonic()
                    r = s.token_post(c, sec)
                    self.assertLess(time.monotonic() - t0, 5.0)
                    self.assertOAuthError(r, 503, "temporarily_unavailable",
                                          f"token, database down, {what}")
            t0 = time.monotonic()
            r = s.register({"client_id": s.uid("dbdown-reg"), "client_secret": "secret12"})
            self.assertLess(time.monotonic() - t0, 5.0)
            self.assertJsonError(r, 503, "temporarily_unavailable", "register, database down")
            # through nginx too, and the read-only endpoints keep working
            r = s.nginx.post("/api/auth/token", form({"grant_type": "client_credentials",
                                                      "client_id": cid, "client_secret": secret}),
                             FORM)
            self.assertJsonError(r, 503, "temporarily_unavailable", "token via nginx, db down")
            self.assertEqual(s.nginx.get("/api/auth/jwks.json").status, 200)
            self.assertEqual(s.nginx.get("/.well-known/oauth-authorization-server").status, 200)
            self.assertTrue(s.auth.alive(), "auth-service died with the database")
        finally:
            s.pg.start()

        ok, took = self.wait_for(
            lambda: http("GET", s.auth.port, "/api/auth/health", timeout=5).status == 200,
            10.0, 0.2)
        self.assertTrue(ok, "health not 200 within 10 s of the database's return")
        # Each worker thread has its own connection and waits 0.5 s after a
        # failed connect before trying again (it answers 503 + Retry-After: 1
        # meanwhile): tokens must flow again shortly after health says so.
        last = {"streak": 0}

        def tokens_flow():
            # 8 successes in a row: every worker thread is back
            r = last["r"] = s.token_post(cid, secret)
            last["streak"] = last["streak"] + 1 if r.status == 200 else 0
            if r.status != 200:
                self.assertOAuthError(r, 503, "temporarily_unavailable", "while recovering")
            return last["streak"] >= 8
        ok, took = self.wait_for(tokens_flow, 3.0, 0.02)
        self.assertTrue(ok, f"tokens not flowing within 3 s of health 200: {last.get('r')!r}")
        self.assertToken(last["r"], "token after recovery")
        self.assertToken(s.token_post(other_id, other_secret), "token after recovery (2)")
        cid3, secret3 = s.new_client("dbdown-after")
        self.assertToken(s.token_post(cid3, secret3), "new client after recovery")
        self.assertTrue(s.auth.alive())
