-- wrk script for the currency API with one bearer token reused on every
-- request, as a real client does (a token lives 15 minutes).
--
--   BENCH_TOKEN=eyJ... \
--     wrk -t2 -c32 -d10s --latency -s bench/currency.lua http://127.0.0.1:9002/api/currency/BTC
--
-- Every request is the same GET with "Authorization: Bearer $BENCH_TOKEN" and
-- "Accept: application/json" (without BENCH_TOKEN the Authorization header is
-- left out). wrk builds the request once per thread from wrk.headers: no
-- request() or response() callback, so the script costs wrk nothing per
-- request. bench/currency.sh reads wrk's own output (Requests/sec, the
-- --latency lines) and the one line done() prints.

local token = os.getenv("BENCH_TOKEN")

wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
if token and token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end

-- One plain line for currency.sh: how many requests failed and how.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "currency.lua: requests=%d status_errors=%d socket_errors=%d\n",
      summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
