"""Assertions shared by the cases."""

import time
import unittest

import harness


class Base(unittest.TestCase):
    maxDiff = 4000

    @property
    def s(self):
        return harness.STACK

    def assertJsonError(self, r, status, code=None, ctx=""):
        """status, a JSON body {"error": code, ...}; returns the body."""
        msg = f"{ctx} -> {r!r}"
        self.assertEqual(r.status, status, msg)
        ctype = r.header("Content-Type") or ""
        self.assertTrue(ctype.startswith("application/json"), f"Content-Type {ctype!r}: {msg}")
        self.assertTrue(r.is_json(), f"body is not JSON: {msg}")
        doc = r.json()
        self.assertIsInstance(doc, dict, msg)
        self.assertIsInstance(doc.get("error"), str, msg)
        if code is not None:
            self.assertEqual(doc["error"], code, msg)
        return doc

    def assertOAuthError(self, r, status, code, ctx=""):
        """RFC 6749 §5.2 error from the token endpoint, never cached; a 401
        carries a WWW-Authenticate challenge for Basic."""
        doc = self.assertJsonError(r, status, code, ctx)
        self.assertEqual(r.header("Cache-Control"), "no-store", f"{ctx} -> {r!r}")
        self.assertEqual(r.header("Pragma"), "no-cache", f"{ctx} -> {r!r}")
        if status == 401:
            www = r.header("WWW-Authenticate") or ""
            self.assertTrue(www.startswith("Basic"), f"{ctx}: WWW-Authenticate {www!r}")
        return doc

    def assertToken(self, r, ctx="", scope=None):
        """RFC 6749 §5.1 success: the four members, no-store, no-cache."""
        msg = f"{ctx} -> {r!r}"
        self.assertEqual(r.status, 200, msg)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), msg)
        doc = r.json()
        self.assertIsInstance(doc.get("access_token"), str, msg)
        self.assertEqual(doc.get("token_type"), "Bearer", msg)
        self.assertIsInstance(doc.get("expires_in"), int, msg)
        self.assertGreater(doc["expires_in"], 0, msg)
        self.assertIsInstance(doc.get("scope"), str, msg)
        if scope is not None:
            self.assertEqual(doc["scope"], scope, msg)
        self.assertEqual(r.header("Cache-Control"), "no-store", msg)
        self.assertEqual(r.header("Pragma"), "no-cache", msg)
        self.assertEqual(doc["access_token"].count("."), 2, msg)
        return doc

    def wait_for(self, fn, timeout, interval=0.05):
        """Calls fn() until it returns a true value or timeout; returns the
        last value and the time it took."""
        start = time.monotonic()
        while True:
            v = fn()
            if v or time.monotonic() - start >= timeout:
                return v, time.monotonic() - start
            time.sleep(interval)
