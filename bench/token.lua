-- wrk script for the OAuth2 token endpoint (client credentials grant).
--
--   BENCH_CLIENT_ID=... BENCH_CLIENT_SECRET=... \
--     wrk -t2 -c32 -d10s --latency -s bench/token.lua http://127.0.0.1:9001/api/auth/token
--
-- Every request is the same POST: form body grant_type=client_credentials and
-- client_secret_basic authentication (RFC 6749 §2.3.1: id and secret are
-- form-urlencoded, joined with ':', then base64). Without BENCH_CLIENT_ID the
-- Authorization header is left out (the ceiling server does not look at it).
-- wrk builds the request once per thread from wrk.method/body/headers: no
-- request() or response() callback, so the script costs wrk nothing per request.
-- bench/token.sh reads wrk's own output (Requests/sec, the --latency lines) and
-- the one line done() prints.

-- base64 and form encoding: bench/lib.lua, next to this script.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "lib.lua")

local client_id = os.getenv("BENCH_CLIENT_ID")
local client_secret = os.getenv("BENCH_CLIENT_SECRET") or ""

wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
if client_id and client_id ~= "" then
   wrk.headers["Authorization"] = lib.basic_auth(client_id, client_secret)
end

-- One plain line for token.sh: how many requests failed and how.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "token.lua: requests=%d status_errors=%d socket_errors=%d\n",
      summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
