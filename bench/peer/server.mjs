// Peer for bench/token.sh: panva/node-oidc-provider (9.x) as a client
// credentials token server issuing ES256 JWT access tokens (RFC 9068 profile),
// the closest off-the-shelf equivalent of our /api/auth/token.
//
//   node server.mjs [PORT]     PORT 0 (default) picks a free one
//
// Listens on 127.0.0.1, prints "port N" on stdout once it accepts requests.
// One client, from BENCH_CLIENT_ID / BENCH_CLIENT_SECRET (client_secret_basic,
// grant client_credentials, scope currency:read). Its token endpoint is /token.
// Store: the provider's default in-memory adapter (nothing to set up; that
// flatters the peer, if anything). Stops on SIGINT/SIGTERM.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node server.mjs [PORT]');
  process.exit(2);
}
const clientId = process.env.BENCH_CLIENT_ID || 'bench-peer';
const clientSecret = process.env.BENCH_CLIENT_SECRET || randomBytes(32).toString('hex');
const resource = 'urn:m2m:bench';
const scope = 'currency:read';

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bench', alg: 'ES256', use: 'sig' };

const provider = new Provider('http://127.0.0.1', {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256', // the only key is P-256
      scope,
    },
  ],
  jwks: { keys: [signingKey] },
  scopes: [scope],
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // no `resource` parameter in the request: this resource server
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope,
        audience: resource,
        accessTokenTTL: 900,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
// The provider logs nothing per request; surface server-side errors only.
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`port ${server.address().port}\n`);
});
server.keepAliveTimeout = 30_000;

const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
