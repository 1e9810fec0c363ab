"""The test cases, in the order they run.

Order matters in three places: the seed's curl lines come first (they register
the client "test", which must not exist yet), the restart and database-down
cases come late (they disturb the daemon and the cluster), and the hygiene case
comes last (it stops the main daemon and reads every log of the run).
"""

import unittest

from . import (cache, cli_tokens, discovery, hostile, hygiene, lifecycle, registration,
               seed_e2e, token_endpoint)

ORDER = [
    lifecycle.FirstStart,
    seed_e2e.SeedCurlThroughNginx,
    seed_e2e.RequestIdThroughNginx,
    registration.Registration,
    token_endpoint.ClientAuthentication,
    token_endpoint.TokenErrors,
    token_endpoint.ConcurrentTokens,
    cli_tokens.VerifiedTokens,
    cli_tokens.OperatorCli,
    discovery.Discovery,
    discovery.Metrics,
    cache.CacheCorrectness,
    hostile.HostileInput,
    hostile.HostileThroughNginx,
    lifecycle.DefaultKdfAndTtl,
    lifecycle.Restart,
    lifecycle.DatabaseDown,
    hygiene.Hygiene,
]


def suite(patterns=()):
    loader = unittest.TestLoader()
    out = unittest.TestSuite()
    for cls in ORDER:
        for test in loader.loadTestsFromTestCase(cls):
            if not patterns or any(p in test.id() for p in patterns) or \
                    cls is hygiene.Hygiene:
                out.addTest(test)
    return out
