// A standard OAuth2 client library gets a token from the metadata alone.
//
//   node discover.mjs ISSUER CLIENT_ID CLIENT_SECRET [SCOPE]
//
// openid-client v6: RFC 8414 discovery from the issuer URL
// (/.well-known/oauth-authorization-server), client_secret_basic, then the
// client credentials grant; the token is then verified with jose against the
// jwks_uri from the discovered metadata (ES256 pinned, iss, aud, typ at+jwt).
// Prints {"metadata": {...}, "token": {...}, "verified": {"header","payload"}}
// or {"error": "...", "stage": "..."} with exit status 1.
import * as client from 'openid-client';
import { createRemoteJWKSet, jwtVerify } from 'jose';

async function main() {
  const [issuer, clientId, clientSecret, scope] = process.argv.slice(2);
  if (!issuer || !clientId || !clientSecret) {
    process.stderr.write('usage: node discover.mjs ISSUER CLIENT_ID CLIENT_SECRET [SCOPE]\n');
    process.exit(2);
  }
  let stage = 'discovery';
  try {
    const config = await client.discovery(
      new URL(issuer),
      clientId,
      undefined,
      client.ClientSecretBasic(clientSecret),
      { algorithm: 'oauth2', execute: [client.allowInsecureRequests], timeout: 5 },
    );
    const metadata = config.serverMetadata();
    stage = 'client_credentials';
    const params = {};
    if (scope) params.scope = scope;
    const tokens = await client.clientCredentialsGrant(config, params);
    stage = 'verify';
    const JWKS = createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: 5000 });
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, JWKS, {
      algorithms: ['ES256'],
      issuer: metadata.issuer,
      typ: 'at+jwt',
    });
    const token = {
      access_token: tokens.access_token,
      token_type: tokens.token_type,
      expires_in: tokens.expires_in,
      scope: tokens.scope,
    };
    process.stdout.write(
      JSON.stringify({ metadata, token, verified: { header: protectedHeader, payload } }) + '\n',
    );
  } catch (e) {
    let responseBody = null;
    if (e.response && typeof e.response.clone === 'function') {
      try { responseBody = await e.response.clone().json(); } catch { /* not JSON or used */ }
    }
    const challenges = Array.isArray(e.cause) ? e.cause : null;
    process.stdout.write(
      JSON.stringify({
        stage,
        error: `${e.name}: ${e.message}`,
        code: e.code || null,
        status: e.status || e.response?.status || null,
        body: e.error ? { error: e.error, error_description: e.error_description } : null,
        challenges,
        response_body: responseBody,
      }) + '\n',
    );
    process.exit(1);
  }
}

main();
