"""crypto-server's API against the real auth-service and PostgreSQL: the
seed's curl line through nginx, RFC 6750 answers, rates that move, history,
Server-Sent Events and metrics."""

import json
import os
import time
import urllib.parse

import harness
from harness import EXTRA_RESOURCE, SSE, http

from .currency_base import (RFC3339_RE, TICK, CurrencyBase, bearer, parse_time, rfc3339)
from .seed_e2e import curl


class CurrencySeedFlow(CurrencyBase):
    """register, token (JSON), then the seed's line verbatim apart from host:port."""

    def test_seed_flow_through_nginx_with_curl(self):
        s = self.s
        host = f"127.0.0.1:{s.nginx_port}"
        cid = s.uid("seed-cur")
        secret = "seed-cur-" + os.urandom(8).hex()
        s.secrets.add(secret)
        reg = json.dumps({"client_id": cid, "client_secret": secret, "app_name": "Seed currency"})
        status, headers, body = curl(f"curl -X POST http://{host}/api/auth/register "
                                     f"-H \"Content-Type: application/json\" -d '{reg}'")
        self.assertEqual(status, 201, body)
        status, headers, body = curl(
            f"curl -X POST http://{host}/api/auth/token -H \"Content-Type: application/json\" "
            f"-d '{json.dumps({'client_id': cid, 'client_secret': secret})}'")
        self.assertEqual(status, 200, body)
        token = json.loads(body)["access_token"]
        s.tokens.add(token)

        status, headers, body = curl(f'curl http://{host}/api/currency/ '
                                     f'-H "Authorization: Bearer {token}"')
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["content-type"][0].startswith("application/json"), headers)
        self.assertRegex(headers.get("x-request-id", [""])[0], r"^[0-9a-f]{32}$", headers)
        self.assertIn("no-store", headers.get("cache-control", [""])[0], headers)
        self.assertNotIn("www-authenticate", headers)
        doc = json.loads(body)
        self.assertIsInstance(doc, list)
        self.assertGreaterEqual(len(doc), 10, doc)
        by = {}
        for obj in doc:
            self.assertRate(obj, ctx="seed line")
            by[obj["symbol"]] = obj
        self.assertEqual(len(by), len(doc), "a symbol twice")
        self.assertIn("BTC", by)
        self.assertIn("ETH", by)

        for path in ["/api/currency/BTC", "/api/currency/btc", "/api/currency/bTc"]:
            with self.subTest(path=path):
                status, headers, body = curl(f'curl http://{host}{path} '
                                             f'-H "Authorization: Bearer {token}"')
                self.assertEqual(status, 200, body)
                self.assertTrue(headers["content-type"][0].startswith("application/json"))
                one = json.loads(body)
                self.assertIsInstance(one, dict, "one object, not an array")
                self.assertRate(one, "BTC", path)
                # the same currency as in the list (it may have moved a few ticks)
                self.assertLess(abs(one["rate"] / by["BTC"]["rate"] - 1), 0.05, (one, by["BTC"]))

        status, headers, body = curl(f'curl http://{host}/api/currency/NOPE '
                                     f'-H "Authorization: Bearer {token}"')
        self.assertEqual(status, 404, body)
        self.assertTrue(headers["content-type"][0].startswith("application/json"), headers)
        self.assertEqual(json.loads(body)["error"], "not_found")

    def test_unknown_and_malformed_symbols_are_404_json(self):
        s = self.s
        token = self.read_token("cur-sym")
        paths = ["/api/currency/NOPE", "/api/currency/XYZ123", "/api/currency/B%20C",
                 "/api/currency/" + "A" * 20, "/api/currency/" + "B" * 11,
                 "/api/currency/BTC%00", "/api/currency/BTC%3B", "/api/currency/%C3%84TH",
                 "/api/currency/BT-C", "/api/currency/BTC.json", "/api/currency/%25"]
        for target in (self.cs, s.nginx):
            for path in paths:
                if target is s.nginx and "%00" in path:
                    continue  # nginx itself refuses a NUL in the path (400)
                with self.subTest(via=type(target).__name__, path=path):
                    r = http("GET", target.port, path, headers=bearer(token))
                    self.assertJsonError(r, 404, "not_found", path)
                    self.assertIsNone(r.header("WWW-Authenticate"), r)
        # unknown, but the token is checked first: no token is a 401, not a 404
        r = self.cs.get("/api/currency/NOPE")
        self.assertChallenge(r, 401, None, ctx="no token, unknown symbol")
        self.assertTrue(self.cs.alive())


class CurrencyBearerErrors(CurrencyBase):
    """RFC 6750 §3 answers, scope and role checks, and the admin's PUT."""

    @classmethod
    def setUpClass(cls):
        s = harness.STACK
        if s.currency is None:
            return
        cls.reader = cls.read_token("cur-reader")
        cls.other_aud = cls.read_token("cur-otheraud", [("resource", EXTRA_RESOURCE)])
        cls.other_scope = cls.operator_token("cur-otherscope", "--scopes", "other:thing")
        cls.writer = cls.operator_token("cur-writer", "--scopes", "currency:read currency:write")
        cls.admin = cls.admin_token()
        # A 5-second token, accepted now (so it also sits in the verified-token
        # cache) and refused once it has expired (test_99).
        cls.short = cls.operator_token("cur-ttl5", "--ttl", "5")
        cls.short_exp = harness.jwt_parts(cls.short)[1]["exp"]
        cls.short_first = http("GET", s.currency.port, "/api/currency/BTC",
                               headers=bearer(cls.short))

    def test_01_no_token_is_a_bare_challenge(self):
        for target in (self.cs, self.s.nginx):
            for method, path in [("GET", "/api/currency/"), ("GET", "/api/currency/BTC"),
                                 ("GET", "/api/currency/BTC/history"),
                                 ("PUT", "/api/currency/BTC")]:
                with self.subTest(via=type(target).__name__, path=path, method=method):
                    body = '{"rate": 1}' if method == "PUT" else None
                    r = http(method, target.port, path, body=body,
                             headers={"Content-Type": "application/json"} if body else None)
                    self.assertChallenge(r, 401, None, ctx=f"{method} {path} without a token")
                    self.assertNotIn("error=", r.header("WWW-Authenticate"))

    def test_02_other_schemes_are_a_bare_challenge(self):
        for value in [harness.basic("someone", "secret12"), "Digest username=\"x\"",
                      "Token abc"]:
            with self.subTest(auth=value):
                r = self.cs.get("/api/currency/", headers={"Authorization": value})
                self.assertChallenge(r, 401, None, ctx=f"Authorization: {value}")

    def test_03_malformed_authorization_is_400_invalid_request(self):
        for value in ["Bearer a b", "Bearer", "Bearer ", f"Bearer\t{self.reader}",
                      "Bearer ab\"cd", f"Bearer {self.reader},x"]:
            with self.subTest(auth=value[:30]):
                r = self.cs.get("/api/currency/", headers={"Authorization": value})
                self.assertChallenge(r, 400, "invalid_request", ctx=f"Authorization: {value!r}")

    def test_04_invalid_tokens_are_401_invalid_token(self):
        h, p, sig = self.reader.split(".")
        cases = {
            "garbage": "garbage",
            "three garbage parts": "abc.def.ghi",
            "another audience": self.other_aud,
            "payload of another token": f"{h}.{self.admin.split('.')[1]}.{sig}",
            "no signature": f"{h}.{p}.",
        }
        for what, token in cases.items():
            for target in (self.cs, self.s.nginx):
                with self.subTest(what, via=type(target).__name__):
                    r = http("GET", target.port, "/api/currency/BTC", headers=bearer(token))
                    self.assertChallenge(r, 401, "invalid_token", ctx=what)
        # and the right one works, with Bearer in any case
        self.assertOne(self.cs.get("/api/currency/BTC", headers=bearer(self.reader)), "BTC")
        self.assertOne(self.cs.get("/api/currency/BTC",
                                   headers={"Authorization": f"bearer {self.reader}"}), "BTC")

    def test_05_insufficient_scope_names_the_scope(self):
        for path in ["/api/currency/", "/api/currency/ETH", "/api/currency/ETH/history"]:
            with self.subTest(path=path):
                r = self.cs.get(path, headers=bearer(self.other_scope))
                self.assertChallenge(r, 403, "insufficient_scope", scope="currency:read",
                                     ctx=f"{path}, scope other:thing")
        r = self.s.nginx.get("/api/currency/", headers=bearer(self.other_scope))
        self.assertChallenge(r, 403, "insufficient_scope", scope="currency:read", ctx="via nginx")

    def put(self, token, symbol="DOT", body=None, ctype="application/json", via=None):
        headers = dict(bearer(token)) if token else {}
        if ctype:
            headers["Content-Type"] = ctype
        target = via or self.cs
        return http("PUT", target.port, f"/api/currency/{symbol}",
                    body=body if body is not None else '{"rate": 7.25}', headers=headers)

    def test_06_put_needs_scope_write_and_role_admin(self):
        r = self.put(self.reader)
        self.assertChallenge(r, 403, "insufficient_scope", scope="currency:write",
                             ctx="PUT by a self-registered client")
        r = self.put(self.writer)
        self.assertJsonError(r, 403, "forbidden", "PUT with currency:write but no role")
        self.assertIn("admin", r.json().get("error_description", ""), r)
        r = self.put(self.other_scope)
        self.assertChallenge(r, 403, "insufficient_scope", scope="currency:write",
                             ctx="PUT with scope other:thing")

    def test_07_admin_put_is_served_at_once(self):
        for target, symbol, value in [(self.cs, "DOT", 12345.5), (self.s.nginx, "dot", 54321.25)]:
            with self.subTest(via=type(target).__name__):
                r = self.put(self.admin, symbol, json.dumps({"rate": value}), via=target)
                one = self.assertOne(r, "DOT", f"PUT {symbol} {value}")
                self.assertEqual(one["rate"], value, one)
                self.assertLess(abs(parse_time(one["last_updated"]) - time.time()), 5, one)
                got = self.assertOne(self.cs.get("/api/currency/DOT",
                                                 headers=bearer(self.reader)), "DOT")
                # A tick may have moved it since (at most 0.5 % per tick).
                if got["last_updated"] == one["last_updated"]:
                    self.assertEqual(got["rate"], value, got)
                else:
                    self.assertLess(abs(got["rate"] / value - 1), 0.011, (got, one))
                listed = self.rates(self.reader)["DOT"]
                self.assertLess(abs(listed["rate"] / value - 1), 0.011, listed)
        # JSON with a charset parameter is still JSON
        r = self.put(self.admin, "DOT", '{"rate": 7.1}', "application/json; charset=utf-8")
        self.assertEqual(self.assertOne(r, "DOT", "charset=utf-8")["rate"], 7.1)

    def test_07b_put_value_reads_back_unchanged(self):
        """What an admin sets is what every reader gets back (as far as a
        double carries it: 15 significant digits), not a rounded copy."""
        try:
            for value in [12345.123456789, 98765432.12345, 0.1234567891]:
                with self.subTest(value=value):
                    r = self.put(self.admin, "DOT", json.dumps({"rate": value}))
                    one = self.assertOne(r, "DOT", f"PUT {value}")
                    got = self.assertOne(self.cs.get("/api/currency/DOT",
                                                     headers=bearer(self.reader)), "DOT")
                    hist = self.cs.get("/api/currency/DOT/history?limit=1",
                                       headers=bearer(self.reader)).json()["history"][0]
                    for what, rate in [("PUT reply", one["rate"]), ("GET", got["rate"]),
                                       ("history", hist["rate"])]:
                        self.assertLess(abs(rate / value - 1), 1e-13,
                                        f"{what}: set {value!r}, read {rate!r}")
        finally:
            self.put(self.admin, "DOT", '{"rate": 7.1}')

    def test_08_put_bad_bodies_are_400(self):
        for body in ["not json", "{", "[1]", '"rate"']:
            with self.subTest(body=body):
                r = self.put(self.admin, body=body)
                self.assertJsonError(r, 400, "invalid_request", f"PUT body {body!r}")
        for body in ['{"rate": 0}', '{"rate": -5}', '{"rate": -0.0}', '{"rate": "123"}',
                     '{"rate": 1e999}', '{"rate": -1e999}', '{"rate": 1e300}', '{"rate": null}',
                     '{"rate": true}', '{"rate": [1]}', '{}', '{"price": 5}',
                     # positive, but 0 at the 10 decimals a rate is stored with
                     '{"rate": 1e-11}']:
            with self.subTest(body=body):
                r = self.put(self.admin, body=body)
                doc = self.assertJsonError(r, 400, "invalid_request", f"PUT body {body!r}")
                self.assertTrue(doc.get("field") == "rate" or
                                "rate" in doc.get("error_description", ""),
                                f"the error should name the field rate: PUT {body!r} -> {r!r}")
        # nothing was changed by any of them
        got = self.assertOne(self.cs.get("/api/currency/DOT", headers=bearer(self.reader)), "DOT")
        self.assertLess(abs(got["rate"] / 7.1 - 1), 0.05, got)

    def test_09_put_content_type_and_unknown_symbol(self):
        for ctype in ["text/plain", "application/x-www-form-urlencoded", None]:
            with self.subTest(ctype=ctype):
                r = self.put(self.admin, body='{"rate": 5}', ctype=ctype)
                self.assertJsonError(r, 415, "unsupported_media_type", f"PUT as {ctype}")
        for symbol in ["NOPE", "A" * 20, "B%20C"]:
            with self.subTest(symbol=symbol):
                r = self.put(self.admin, symbol, '{"rate": 5}')
                self.assertJsonError(r, 404, "not_found", f"PUT {symbol}")
        (row,) = self.s.pg.query("SELECT count(*) FROM currency.rates WHERE symbol = 'NOPE'")
        self.assertEqual(row, ["0"])

    def test_99_expired_token_is_refused(self):
        # Accepted while valid (and so cached as verified) ...
        self.assertOne(self.short_first, "BTC", "5-second token, fresh")
        # ... refused once exp (+ the default 5 s leeway) has passed, cache or not.
        leeway = int(self.cs.env.get("CURRENCY_LEEWAY", "5"))
        wait = self.short_exp + leeway + 1 - time.time()
        self.assertLess(wait, 20, "the 5-second token lives too long")
        if wait > 0:
            time.sleep(wait)
        for target in (self.cs, self.s.nginx):
            with self.subTest(via=type(target).__name__):
                r = http("GET", target.port, "/api/currency/BTC", headers=bearer(self.short))
                self.assertChallenge(r, 401, "invalid_token", ctx="expired token")


class CurrencyRatesMove(CurrencyBase):
    def test_rates_move_within_half_a_percent_per_tick(self):
        token = self.read_token("cur-move")
        t0 = time.time()
        before = self.rates(token)
        time.sleep(3.2 * TICK)
        after = self.rates(token)
        self.assertEqual(set(before), set(after))
        moved = [sym for sym in before if before[sym]["rate"] != after[sym]["rate"]]
        self.assertGreaterEqual(len(moved), 0.75 * len(before),
                                f"only {moved} moved in 3 ticks:\n{before}\n{after}")
        newer = [sym for sym in before
                 if parse_time(after[sym]["last_updated"]) > parse_time(before[sym]["last_updated"])]
        self.assertGreaterEqual(len(newer), 0.75 * len(before), "last_updated did not advance")

        time.sleep(2 * TICK)
        since = rfc3339(t0)
        checked = 0
        for sym in sorted(before):
            r = self.cs.get(f"/api/currency/{sym}/history?since={since}&limit=100",
                            headers=bearer(token))
            self.assertEqual(r.status, 200, r)
            points = r.json()["history"]
            self.assertGreaterEqual(len(points), 4, f"{sym}: {points}")
            for newer_p, older_p in zip(points, points[1:]):
                step = abs(newer_p["rate"] / older_p["rate"] - 1)
                self.assertLessEqual(step, 0.005 + 1e-9,
                                     f"{sym}: a step of {step:.6%} between {older_p} and {newer_p}")
                checked += 1
        self.assertGreater(checked, 30)


class CurrencyHistory(CurrencyBase):
    @classmethod
    def setUpClass(cls):
        if harness.STACK.currency is not None:
            cls.token = cls.read_token("cur-hist")

    def history(self, query, symbol="BTC", status=200):
        r = self.cs.get(f"/api/currency/{symbol}/history{query}", headers=bearer(self.token))
        if status == 200:
            self.assertEqual(r.status, 200, f"{query} -> {r!r}")
            self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r)
        return r

    def assertHistory(self, r, symbol, limit=None):
        doc = r.json()
        self.assertEqual(doc.get("symbol"), symbol, doc)
        self.assertRegex(doc.get("since", ""), RFC3339_RE, doc)
        self.assertIsInstance(doc.get("history"), list, doc)
        if limit is not None:
            self.assertEqual(doc.get("limit"), limit, doc)
            self.assertLessEqual(len(doc["history"]), limit, doc)
        times = []
        for p in doc["history"]:
            self.assertIsInstance(p.get("rate"), (int, float), p)
            self.assertGreater(p["rate"], 0, p)
            self.assertRegex(p.get("at", ""), RFC3339_RE, p)
            times.append(parse_time(p["at"]))
        self.assertEqual(times, sorted(times, reverse=True), f"not newest first: {doc}")
        self.assertEqual(len(set(times)), len(times), f"a timestamp twice: {doc}")
        return doc, times

    def test_01_limit_newest_first(self):
        # more than 5 points exist after a few ticks (at most 6 after the start)
        self.wait_for(lambda: len(self.history("?limit=6").json()["history"]) == 6,
                      8 * TICK + 1, 0.2)
        doc, times = self.assertHistory(self.history("?limit=5"), "BTC", 5)
        self.assertEqual(len(doc["history"]), 5, "more than 5 points exist by now")
        self.assertLess(time.time() - times[0], 3 * TICK + 1, "newest point is too old")
        # case-insensitive symbol, default limit
        doc, _ = self.assertHistory(self.history("?limit=2", "eth"), "ETH", 2)
        doc, _ = self.assertHistory(self.history(""), "BTC")
        self.assertGreaterEqual(len(doc["history"]), 5)

    def test_02_grows_over_time(self):
        t0 = int(time.time()) - 1
        first, _ = self.assertHistory(self.history(f"?since={t0}&limit=1000"), "BTC")
        time.sleep(2.5 * TICK)
        second, times = self.assertHistory(self.history(f"?since={t0}&limit=1000"), "BTC")
        self.assertGreaterEqual(len(second["history"]), len(first["history"]) + 2,
                                f"history did not grow in 2.5 ticks: {first} {second}")

    def test_03_since_filters(self):
        now = time.time()
        everything, _ = self.assertHistory(self.history("?limit=1000"), "BTC")
        cut = now - 2.5 * TICK
        forms = {
            "unix seconds": str(int(cut)),
            "RFC 3339": rfc3339(cut, ms=False),
            "RFC 3339 with fraction": rfc3339(cut),
            "RFC 3339 +00:00": rfc3339(cut, ms=False)[:-1] + "+00:00",
        }
        for what, value in forms.items():
            with self.subTest(what, since=value):
                doc, times = self.assertHistory(
                    self.history("?limit=1000&since=" + urllib.parse.quote(value, safe="")),
                    "BTC")
                bound = parse_time(value) if "T" in value else float(value)
                self.assertTrue(times, f"nothing since {value}")
                self.assertGreaterEqual(min(times), bound - 0.001, f"a point before {value}")
                self.assertLess(len(times), len(everything["history"]), "since= did not filter")
                self.assertLessEqual(abs(parse_time(doc["since"]) - bound), 1, doc)
        # far back: everything, and the echoed since is still RFC 3339
        for value in ["0", "1900-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]:
            with self.subTest("far back", since=value):
                doc, times = self.assertHistory(self.history(f"?limit=1000&since={value}"), "BTC")
                self.assertGreaterEqual(len(times), len(everything["history"]))
        # a future since: nothing
        doc, times = self.assertHistory(self.history(f"?since={int(now) + 3600}"), "BTC")
        self.assertEqual(times, [])

    def test_04_bad_parameters_are_400_naming_the_field(self):
        bad = [("since", "yesterday"), ("since", ""), ("since", "-5"), ("since", "1e9"),
               ("since", "2026-13-45T99:00:00Z"), ("since", "2026-11-22"),
               ("since", "99999999999999999999"), ("since", "2026-11-22T10:00:00Zjunk"),
               # dates that do not exist: refused, not rolled over into March or May
               ("since", "2026-02-30T00:00:00Z"), ("since", "2026-04-31T12:00:00Z"),
               ("limit", "0"), ("limit", "100000"), ("limit", "abc"), ("limit", "-1"),
               ("limit", "1.5"), ("limit", ""), ("limit", "5abc"),
               ("limit", "99999999999999999999")]
        for field, value in bad:
            with self.subTest(field=field, value=value):
                q = f"?{field}={urllib.parse.quote(value, safe='')}"
                r = self.history(q, status=400)
                doc = self.assertJsonError(r, 400, "invalid_request", f"history{q}")
                self.assertTrue(doc.get("field") == field or
                                doc.get("error_description", "").startswith(field),
                                f"the error should name {field}: {r!r}")
        for symbol in ["NOPE", "A" * 20]:
            with self.subTest(symbol=symbol):
                r = self.history("?limit=5", symbol, status=404)
                self.assertJsonError(r, 404, "not_found", f"history of {symbol}")

    def test_05_old_history_is_pruned(self):
        s = self.s
        marker_old, marker_recent = "4242.4242", "4343.4343"
        s.pg.exec("INSERT INTO currency.history (symbol, rate, at) VALUES "
                  f"('BTC', {marker_old}, now() - interval '2 days'), "
                  f"('ETH', {marker_old}, now() - interval '25 hours'), "
                  f"('BTC', {marker_recent}, now() - interval '23 hours')")
        try:
            def old_rows():
                return int(s.pg.query("SELECT count(*) FROM currency.history "
                                      f"WHERE rate = {marker_old}")[0][0])
            self.assertEqual(old_rows(), 2, "the test rows were not inserted")
            gone, took = self.wait_for(lambda: old_rows() == 0, 8 * TICK + 2, 0.2)
            self.assertTrue(gone, "history older than the retention (1 day) still there "
                                  f"after {took:.1f} s")
            (kept,) = s.pg.query("SELECT count(*) FROM currency.history "
                                 f"WHERE rate = {marker_recent}")
            self.assertEqual(kept, ["1"], "a point younger than the retention was pruned")
            (oldest,) = s.pg.query("SELECT extract(epoch FROM now() - min(at))::int "
                                   "FROM currency.history")
            self.assertLessEqual(int(oldest[0]), 86400 + 60)
        finally:
            s.pg.exec(f"DELETE FROM currency.history WHERE rate IN ({marker_old}, "
                      f"{marker_recent})")


class CurrencyStream(CurrencyBase):
    @classmethod
    def setUpClass(cls):
        if harness.STACK.currency is not None:
            cls.token = cls.read_token("cur-sse")

    def assertRatesEvent(self, ev, ctx):
        self.assertIsNotNone(ev, f"{ctx}: no event")
        self.assertEqual(ev.get("event"), "rates", f"{ctx}: {ev}")
        data = json.loads(ev["data"])
        self.assertIsInstance(data, list, ev)
        self.assertGreaterEqual(len(data), 10, ev)
        for obj in data:
            self.assertRate(obj, ctx=ctx)
        return data

    def read_stream(self, port, ctx):
        with SSE(port, "/api/currency/stream", bearer(self.token)) as st:
            if st.status != 200:
                self.fail(f"{ctx}: {st.status} {st.headers} {st.body(1)!r}")
            self.assertEqual(st.header("content-type").split(";")[0].strip(),
                             "text/event-stream", st.headers)
            self.assertIn("no-store", st.header("cache-control") or "", st.headers)
            first = st.next_event(2.0)
            self.assertRatesEvent(first, f"{ctx}: first event")
            self.assertLess(first["t"], 1.0, f"{ctx}: the first event must come at once")
            events = []
            # Generous bounds: a loaded 2-core box (other suites, benchmarks)
            # stalls everything now and then; a buffering proxy or a stream
            # that is never resumed holds events for good.
            deadline = time.monotonic() + 8 * TICK + 2
            while len(events) < 3 and time.monotonic() < deadline:
                ev = st.next_event(max(0.05, deadline - time.monotonic()))
                if ev is None:
                    break
                self.assertRatesEvent(ev, f"{ctx}: event {len(events) + 2}")
                events.append(ev)
            arrivals = [round(first["t"], 3)] + [round(ev["t"], 3) for ev in events]
            load = os.getloadavg()[0]
            self.assertGreaterEqual(len(events), 3, f"{ctx}: {len(events)} tick events in "
                                                   f"{8 * TICK + 2:.1f} s (arrivals {arrivals}, "
                                                   f"load {load:.1f})")
            ids = [int(ev["id"]) for ev in events]
            self.assertEqual(ids, sorted(set(ids)), f"{ctx}: ids not increasing: {ids}")
            # one per tick, as they happen: not held back and sent in a burst
            self.assertGreater(arrivals[-1] - arrivals[1], 0.5 * TICK,
                               f"{ctx}: events arrived in a burst: {arrivals} (load {load:.1f})")
            # the rates in the events move
            d1, d2 = (json.loads(ev["data"]) for ev in (events[0], events[-1]))
            self.assertNotEqual([o["rate"] for o in d1], [o["rate"] for o in d2])
            return st.headers

    def test_01_direct(self):
        headers = self.read_stream(self.cs.port, "direct")
        self.assertEqual(headers.get("x-accel-buffering"), "no", headers)

    def test_02_through_nginx(self):
        self.read_stream(self.s.nginx_port, "nginx")

    def test_03_refused_without_a_valid_token(self):
        for target in (self.cs, self.s.nginx):
            for what, headers in [("no token", {}), ("bad token", bearer("x.y.z"))]:
                with self.subTest(what, via=type(target).__name__):
                    with SSE(target.port, "/api/currency/stream", headers) as st:
                        self.assertEqual(st.status, 401, st.headers)
                        body = st.body()
                        self.assertEqual(json.loads(body)["error"],
                                         "unauthorized" if not headers else "invalid_token")
                        www = st.header("www-authenticate") or ""
                        self.assertTrue(www.startswith('Bearer realm="crypto-server"'), www)

    def test_04_subscriber_gauge(self):
        def gauge():
            return self.cs.metrics().get("currency_stream_subscribers")
        base, _ = self.wait_for(lambda: gauge() == 0, 4 * TICK + 2, 0.1)
        self.assertTrue(base, f"subscribers of the earlier cases still counted: {gauge()}")
        streams = [SSE(self.cs.port, "/api/currency/stream", bearer(self.token))
                   for _ in range(3)]
        try:
            for st in streams:
                self.assertEqual(st.status, 200)
                self.assertIsNotNone(st.next_event(2.0))
            self.assertEqual(gauge(), 3)
            r = self.cs.get("/api/currency/health")
            self.assertEqual(r.json().get("subscribers"), 3, r)
        finally:
            for st in streams:
                st.close()
        ok, took = self.wait_for(lambda: gauge() == 0, 4 * TICK + 2, 0.1)
        self.assertTrue(ok, f"closed streams still counted after {took:.1f} s: {gauge()}")


    def test_05_idle_subscribers_cost_no_cpu(self):
        """Suspended, not polled: 50 quiet subscribers leave the daemon idle
        between ticks (a reader that returns 0 without suspending spins)."""
        def cpu_seconds():
            with open(f"/proc/{self.cs.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        streams = []
        try:
            for _ in range(50):
                streams.append(SSE(self.cs.port, "/api/currency/stream", bearer(self.token)))
            for st in streams:
                self.assertEqual(st.status, 200)
                self.assertIsNotNone(st.next_event(2.0), "no first event")
            self.assertEqual(self.cs.metrics().get("currency_stream_subscribers"), 50)
            c0, t0 = cpu_seconds(), time.monotonic()
            time.sleep(2.0)
            used, wall = cpu_seconds() - c0, time.monotonic() - t0
            self.assertLess(used, 0.2 * wall, f"{used:.2f} s of CPU in {wall:.1f} s with 50 "
                                              f"idle subscribers")
        finally:
            for st in streams:
                st.close()


class CurrencyMetrics(CurrencyBase):
    def test_metrics_on_the_internal_port_only(self):
        s = self.s
        token = self.read_token("cur-metrics")
        self.rates(token)
        self.cs.get("/api/currency/BTC", headers=bearer(token))
        self.cs.get("/api/currency/NOPE", headers=bearer(token))
        self.cs.get("/api/currency/")
        before = self.cs.metrics().get("currency_tokens_refused_total", 0)
        self.cs.get("/api/currency/", headers=bearer("bad.token.here"))

        r = http("GET", self.cs.metrics_port, "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)
        m = harness.parse_metrics(r.body.decode())
        for key in ['currency_http_requests_total{route="/api/currency/",status="200"}',
                    'currency_http_requests_total{route="/api/currency/",status="401"}',
                    'currency_http_requests_total{route="/api/currency/*",status="200"}',
                    'currency_http_requests_total{route="/api/currency/*",status="404"}']:
            self.assertGreaterEqual(m.get(key, 0), 1, f"{key} missing:\n{r.body.decode()[:3000]}")
        self.assertEqual(m.get("currency_updater_leader"), 1, "the only instance leads")
        self.assertIn("currency_stream_subscribers", m)
        self.assertGreaterEqual(m.get("currency_tokens_refused_total", 0), before + 1)
        text = r.body.decode()
        self.assertIn("# TYPE currency_updater_leader gauge", text)
        self.assertIn("# TYPE currency_stream_subscribers gauge", text)
        self.assertNotIn(token, text)

        self.assertEqual(http("GET", self.cs.metrics_port, "/health").status, 200)
        for path in ["/metrics", "/metrics/", "/metricsx"]:
            with self.subTest(path=path):
                self.assertJsonError(s.nginx.get(path), 404, "not_found", f"nginx {path}")
        self.assertJsonError(self.cs.get("/metrics"), 404, "not_found", "API port /metrics")
