"""crypto-server's life cycle: two instances on one database (one updater),
the database stopped and back, and last its log hygiene and clean exit."""

import json
import time

import harness
from harness import CryptoServer, http

from .currency_base import TICK, CurrencyBase, bearer
from .hygiene import string_values


def leader(svc):
    try:
        return svc.alive() and svc.metrics().get("currency_updater_leader") == 1
    except OSError:
        return False


class CurrencyTwoInstances(CurrencyBase):
    def history_rows(self, symbol, since_epoch):
        (row,) = self.s.pg.query("SELECT count(*) FROM currency.history WHERE symbol = "
                                 f"'{symbol}' AND at >= to_timestamp({since_epoch})")
        return int(row[0])

    def db_now(self):
        return float(self.s.pg.query("SELECT extract(epoch FROM clock_timestamp())")[0][0])

    def test_one_updater_for_two_instances(self):
        s = self.s
        token = self.read_token("cur-two")
        main = s.currency
        second = CryptoServer(s, "second").start()
        main_stopped = False
        try:
            time.sleep(2 * TICK)  # the second has tried to lead by now
            leaders = [x for x in (main, second) if leader(x)]
            self.assertEqual(len(leaders), 1, "exactly one instance reports "
                                              "currency_updater_leader 1")
            for x in (main, second):
                h = x.get("/api/currency/health").json()
                self.assertEqual(h.get("updater_leader"), x in leaders, (x.name, h))

            # one move per tick, not one per instance
            window = 3.0
            t0 = self.db_now()
            time.sleep(window)
            n = self.history_rows("BTC", t0)
            ticks = window / TICK
            self.assertLessEqual(n, ticks + 2, f"{n} BTC history rows in {window} s with a "
                                               f"{TICK} s tick: both instances move the rates")
            self.assertGreaterEqual(n, ticks - 3, f"only {n} BTC rows in {window} s")

            # both serve the same rates, within a tick of each other
            a, b = self.rates(token, via=main), self.rates(token, via=second)
            self.assertEqual(set(a), set(b))
            for sym in a:
                self.assertLess(abs(a[sym]["rate"] / b[sym]["rate"] - 1), 0.011, (a[sym], b[sym]))

            # the leader goes away: the other takes over within a couple of ticks
            old, other = leaders[0], second if leaders[0] is main else main
            code = old.stop()
            main_stopped = old is main
            self.assertCleanExit(old, code)
            ok, took = self.wait_for(lambda: leader(other), 4 * TICK + 1, 0.1)
            self.assertTrue(ok, f"{other.name} did not take over within {took:.1f} s")
            before = self.rates(token, via=other)
            t1 = self.db_now()
            time.sleep(3 * TICK)
            after = self.rates(token, via=other)
            moved = [sym for sym in before if before[sym]["rate"] != after[sym]["rate"]]
            self.assertGreaterEqual(len(moved), 0.75 * len(before), "rates stopped moving")
            n = self.history_rows("BTC", t1)
            self.assertGreaterEqual(n, 2, "no history rows after the takeover")
            self.assertLessEqual(n, 3 + 2)
        finally:
            if main_stopped:
                s.start_currency_again(main)
            code = second.stop()
        self.assertCleanExit(second, code)
        ok, took = self.wait_for(lambda: leader(s.currency), 4 * TICK + 1, 0.1)
        self.assertTrue(ok, "the main instance did not lead again once alone")


class CurrencyDatabaseDown(CurrencyBase):
    def test_database_stopped_then_back(self):
        s = self.s
        token = self.read_token("cur-dbdown")
        admin = self.admin_token("cur-dbdown-admin")
        self.rates(token)

        s.pg.stop()
        try:
            last = {}

            def down():
                last["r"] = self.cs.get("/api/currency/health", timeout=5)
                return last["r"].status == 503
            ok, took = self.wait_for(down, 5.0, 0.1)
            self.assertTrue(ok, f"health after the database stopped: {last.get('r')!r}")
            doc = self.assertJsonError(last["r"], 503, "temporarily_unavailable",
                                       "health, database down")
            self.assertEqual(doc.get("database"), "down", doc)
            self.assertIsNotNone(last["r"].header("Retry-After"), last["r"])
            r = http("GET", self.cs.metrics_port, "/health", timeout=5)
            self.assertJsonError(r, 503, "temporarily_unavailable", "internal /health, db down")

            # reads come from memory: the last rates, frozen
            time.sleep(2 * TICK)
            frozen = self.rates(token)
            time.sleep(3 * TICK)
            again = self.rates(token)
            self.assertEqual({k: v["rate"] for k, v in frozen.items()},
                             {k: v["rate"] for k, v in again.items()},
                             "rates moved without a database")
            self.rates(token, via=s.nginx)
            self.assertOne(self.cs.get("/api/currency/eth", headers=bearer(token)), "ETH")

            for what, method, path, body, headers in [
                ("history", "GET", "/api/currency/BTC/history?limit=5", None, bearer(token)),
                ("PUT by admin", "PUT", "/api/currency/DOT", '{"rate": 7.5}',
                 {**bearer(admin), "Content-Type": "application/json"}),
            ]:
                with self.subTest(what):
                    t0 = time.monotonic()
                    r = http(method, self.cs.port, path, body=body, headers=headers, timeout=10)
                    self.assertLess(time.monotonic() - t0, 5.0, f"{what} took too long")
                    self.assertJsonError(r, 503, "temporarily_unavailable", f"{what}, db down")
            r = s.nginx.get("/api/currency/BTC/history", headers=bearer(token))
            self.assertJsonError(r, 503, "temporarily_unavailable", "history via nginx, db down")
            # the stream still opens, with the rates in memory
            with harness.SSE(self.cs.port, "/api/currency/stream", bearer(token)) as st:
                self.assertEqual(st.status, 200)
                ev = st.next_event(2.0)
                self.assertIsNotNone(ev)
                self.assertEqual(len(json.loads(ev["data"])), len(frozen))
            self.assertTrue(self.cs.alive(), "crypto-server died with the database")
        finally:
            s.pg.start()

        ok, took = self.wait_for(
            lambda: self.cs.get("/api/currency/health", timeout=5).status == 200, 10.0, 0.2)
        self.assertTrue(ok, "health not 200 within 10 s of the database's return")
        moved, took = self.wait_for(
            lambda: self.rates(token)["BTC"]["rate"] != frozen["BTC"]["rate"], 6 * TICK + 2, 0.1)
        self.assertTrue(moved, "rates did not move again after the database came back")
        ok, took = self.wait_for(lambda: self.cs.get("/api/currency/BTC/history?limit=1",
                                                     headers=bearer(token)).status == 200,
                                 5.0, 0.2)
        self.assertTrue(ok, "history not back within 5 s of health 200")
        self.assertTrue(leader(self.cs), "the updater did not lead again")


class CurrencyHygiene(CurrencyBase):
    """Stops the main crypto-server: exit 0, no sanitizer report, and every
    crypto-server log of the run is JSON lines without a token or password."""

    def test_logs_after_sigterm(self):
        s = self.s
        main = s.currency
        # Open streams (suspended connections, one through nginx) must not
        # hold the stop up: they end, and the daemon exits 0 at once.
        token = self.read_token("cur-hygiene")
        streams = [harness.SSE(port, "/api/currency/stream", bearer(token))
                   for port in (main.port, main.port, s.nginx_port)]
        try:
            for st in streams:
                self.assertEqual(st.status, 200)
                self.assertIsNotNone(st.next_event(2.0))
            t0 = time.monotonic()
            code = main.stop()
            took = time.monotonic() - t0
            self.assertCleanExit(main, code)
            self.assertLess(took, 5.0, "SIGTERM with open streams: slow to stop")
            for st in streams:
                while st.next_event(3.0) is not None:
                    pass
                self.assertTrue(st.eof, "a stream still open after the daemon stopped")
        finally:
            for st in streams:
                st.close()

        tokens = {t for t in s.tokens | s.currency_tokens if len(t) >= 40}
        needles = [("a token", t) for t in tokens]
        needles += [("a token's signature", t.rsplit(".", 1)[1]) for t in tokens
                    if len(t.rsplit(".", 1)[1]) >= 40]
        needles += [("the database password", p) for p in s.pg.passwords()]
        self.assertTrue(s.currency_logs)
        for path in s.currency_logs:
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
                    self.assertEqual(ev["service"], "crypto-server", f"{path.name}:{n}")
                    for value in string_values(ev):
                        self.assertNotIn("Bearer ", value, f"{path.name}:{n}: {line[:300]}")
                for what, needle in needles:
                    self.assertNotIn(needle, text, f"{path.name} contains {what}")
                for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                    self.assertNotIn(marker, text)
