// Independent verification of access tokens with jose (not the server's code).
//
//   node verify.mjs --jwks URL --issuer ISS [--audience AUD]... [--max-token-age S] TOKEN...
//
// Fetches the JWKS from URL (createRemoteJWKSet), verifies every TOKEN with the
// algorithm pinned to ES256, the issuer, the audience(s) and typ "at+jwt", and
// prints one JSON document on stdout:
//   {"jwks": {"kids": [...], "keys": [...]},
//    "results": [{"ok": true, "header": {...}, "payload": {...}} |
//                {"ok": false, "code": "ERR_...", "error": "message"}]}
// Exit status 0 when the document was printed (whatever the verdicts), 2 on
// bad arguments, 1 on an unexpected failure.
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

function parseArgs(argv) {
  const out = { audience: [], tokens: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const need = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--jwks') out.jwks = need();
    else if (a === '--issuer') out.issuer = need();
    else if (a === '--audience') out.audience.push(need());
    else if (a === '--max-token-age') out.maxTokenAge = Number(need());
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else out.tokens.push(a);
  }
  if (!out.jwks || !out.issuer) throw new Error('--jwks and --issuer are required');
  return out;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`verify.mjs: ${e.message}\n`);
    process.exit(2);
  }
  const jwksUrl = new URL(args.jwks);
  const res = await fetch(jwksUrl, { signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`JWKS: HTTP ${res.status}`);
  const jwksDoc = await res.json();
  const JWKS = createRemoteJWKSet(jwksUrl, { timeoutDuration: 5000 });
  const results = [];
  for (const token of args.tokens) {
    try {
      const options = { algorithms: ['ES256'], issuer: args.issuer, typ: 'at+jwt' };
      if (args.audience.length) options.audience = args.audience;
      if (args.maxTokenAge) options.maxTokenAge = args.maxTokenAge;
      const { payload, protectedHeader } = await jwtVerify(token, JWKS, options);
      results.push({ ok: true, header: protectedHeader, payload });
    } catch (e) {
      let header = null;
      try { header = decodeProtectedHeader(token); } catch { /* not a JWS */ }
      results.push({ ok: false, code: e.code || e.name, error: e.message, header });
    }
  }
  const keys = Array.isArray(jwksDoc.keys) ? jwksDoc.keys : [];
  process.stdout.write(JSON.stringify({ jwks: { kids: keys.map((k) => k.kid), keys }, results }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`verify.mjs: ${e.stack || e}\n`);
  process.exit(1);
});
