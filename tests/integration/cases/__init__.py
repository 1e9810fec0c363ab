"""The test cases, in the order they run.

Order matters in these places: the seed's curl lines come first (they register
the client "test", which must not exist yet), the restart, auth-service-down,
two-instance and database-down cases come late (they disturb the daemons and
the cluster), the unknown-kid case of CurrencyKeysAvailability comes well
over 10 s after the forged-kid burst (one JWKS refetch per 10 s), and the
hygiene cases come last (they stop the main daemons and read every log of the
run).
"""

import unittest

from . import (agent_api, cache, cli_tokens, compose_static, currency_api, currency_lifecycle,
               currency_tokens, discovery, edge_nginx, hostile, hygiene, lifecycle, openapi_docs,
               quick_test, registration, seed_e2e, token_endpoint)

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
    # the edge: nginx's TLS listener, headers, limits, JSON errors, access log
    edge_nginx.EdgeTls,
    edge_nginx.EdgeHeaders,
    edge_nginx.EdgeErrors,
    edge_nginx.EdgeStaticAndLog,
    edge_nginx.EdgeConfigScript,
    # the package: docker compose, Dockerfiles, systemd units (static checks)
    compose_static.ComposeStatic,
    compose_static.DockerfilesStatic,
    compose_static.ComposeNginx,
    compose_static.ComposeBootstrap,
    compose_static.SystemdUnits,
    # crypto-server (issue 3)
    currency_api.CurrencySeedFlow,
    currency_api.CurrencyBearerErrors,
    currency_tokens.CurrencyForgedTokens,
    currency_api.CurrencyRatesMove,
    currency_api.CurrencyHistory,
    currency_api.CurrencyStream,
    currency_api.CurrencyMetrics,
    # crypto-client, the agent (the minute of 5 s tokens runs in threads from
    # AgentLifetimeStart to AgentLifetimeResult; AgentUpstreamDown stops the
    # crypto-server after it)
    agent_api.AgentSeedFlow,
    agent_api.AgentSingleFlight,
    agent_api.AgentLifetimeStart,
    agent_api.AgentConfigure,
    agent_api.AgentRegister,
    agent_api.AgentWrongSecret,
    agent_api.AgentRetryOn401,
    agent_api.AgentFetcher,
    agent_api.AgentEdge,
    agent_api.AgentLifetimeResult,
    agent_api.AgentUpstreamDown,
    agent_api.AgentRestart,
    # OpenAPI documents: lint, route tables, /docs/ through nginx
    openapi_docs.OpenApiLint,
    openapi_docs.OpenApiMatchesRoutes,
    openapi_docs.OpenApiRoutesServed,
    openapi_docs.DocsThroughNginx,
    # scripts/quick-test.sh through both nginx listeners (reconfigures the main agent)
    quick_test.QuickTest,
    quick_test.Demo,
    lifecycle.DefaultKdfAndTtl,
    lifecycle.Restart,
    lifecycle.DatabaseDown,
    currency_tokens.CurrencyKeysAvailability,
    currency_lifecycle.CurrencyTwoInstances,
    currency_lifecycle.CurrencyDatabaseDown,
    agent_api.AgentHygiene,
    currency_lifecycle.CurrencyHygiene,
    hygiene.Hygiene,
]

ALWAYS = (agent_api.AgentHygiene, currency_lifecycle.CurrencyHygiene, hygiene.Hygiene)


def suite(patterns=()):
    loader = unittest.TestLoader()
    out = unittest.TestSuite()
    for cls in ORDER:
        for test in loader.loadTestsFromTestCase(cls):
            if not patterns or any(p in test.id() for p in patterns) or cls in ALWAYS:
                out.addTest(test)
    return out
