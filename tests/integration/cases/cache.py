"""The client cache never outlives a change made in the database."""

from harness import jwt_parts

from .base import Base

WITHIN = 1.0  # seconds a change may take to reach the token endpoint


class CacheCorrectness(Base):
    def setUp(self):
        self.cid, self.secret = self.s.new_client("cache-" + self._testMethodName[5:])
        # Twice: the second one is served from the caches.
        self.assertToken(self.s.token_post(self.cid, self.secret))
        self.assertToken(self.s.token_post(self.cid, self.secret))

    def sql(self, assignment):
        self.s.pg.exec(f"UPDATE auth.clients SET {assignment} WHERE client_id = '{self.cid}'")

    def until(self, predicate, what):
        last = {}

        def attempt():
            r = self.s.token_post(self.cid, self.secret)
            last["r"] = r
            return predicate(r)
        ok, took = self.wait_for(attempt, WITHIN, 0.05)
        self.assertTrue(ok, f"{what}: not within {WITHIN}s; last answer {last.get('r')!r}")
        return last["r"]

    def test_disable_and_enable(self):
        self.sql("active = false")
        r = self.until(lambda r: r.status == 401, "disabled client refused")
        self.assertOAuthError(r, 401, "invalid_client", "disabled client")
        # stays refused (no stale cache entry comes back)
        for _ in range(3):
            self.assertOAuthError(self.s.token_post(self.cid, self.secret), 401, "invalid_client")
        self.sql("active = true")
        self.assertToken(self.until(lambda r: r.status == 200, "re-enabled client served"))

    def test_scope_change_is_seen(self):
        self.sql("scopes = 'currency:read currency:write'")
        r = self.until(lambda r: r.status == 200 and r.json()["scope"] ==
                       "currency:read currency:write", "new scopes in the token")
        self.assertEqual(jwt_parts(r.json()["access_token"])[1]["scope"],
                         "currency:read currency:write")
        self.sql("scopes = 'currency:read'")
        self.until(lambda r: r.status == 200 and r.json()["scope"] == "currency:read",
                   "scopes narrowed again")
        r = self.s.token_post(self.cid, self.secret, [("scope", "currency:write")])
        self.assertOAuthError(r, 400, "invalid_scope", "after narrowing")

    def test_grant_types_change_unauthorized_client(self):
        self.sql("grant_types = 'refresh_token'")
        r = self.until(lambda r: r.status == 400, "grant_types without client_credentials")
        self.assertOAuthError(r, 400, "unauthorized_client", "grant_types=refresh_token")
        self.sql("grant_types = 'client_credentials'")
        self.assertToken(self.until(lambda r: r.status == 200, "grant restored"))
        # '' is refused by the schema's CHECK constraint: no client can be
        # left without a grant list.
        try:
            self.sql("grant_types = ''")
        except RuntimeError as e:
            self.assertIn("check constraint", str(e))
        else:
            r = self.until(lambda r: r.status == 400, "grant_types ''")
            self.assertOAuthError(r, 400, "unauthorized_client", "grant_types=''")

    def test_secret_change_is_seen(self):
        # A new hash in the database (as a rotation would write) drops the old secret.
        other_id, other_secret = self.s.new_client("cache-rot-src")
        self.sql("secret_hash = (SELECT secret_hash FROM auth.clients "
                 f"WHERE client_id = '{other_id}')")
        # the old secret stops working, the new one works
        self.until(lambda r: r.status == 401, "old secret refused after rotation")
        r = self.s.token_post(self.cid, other_secret)
        self.assertToken(r, "rotated secret")

    def test_deleted_client_is_refused(self):
        self.s.pg.exec(f"DELETE FROM auth.clients WHERE client_id = '{self.cid}'")
        r = self.until(lambda r: r.status == 401, "deleted client refused")
        self.assertOAuthError(r, 401, "invalid_client", "deleted client")
