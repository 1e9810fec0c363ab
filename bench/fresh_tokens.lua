-- wrk script for the currency API with a different bearer token on every
-- request: each one has to be verified (signature and claims), none is found
-- in the server's verified-token cache.
--
--   BENCH_TOKEN_FILE=tokens.txt BENCH_THREADS=2 \
--     wrk -t2 -c32 -d10s --latency -s bench/fresh_tokens.lua http://127.0.0.1:9002/api/currency/BTC
--
-- BENCH_TOKEN_FILE holds one access token per line (bench/currency.sh fetches
-- them from the token endpoint with bench/fetch_tokens.lua just before the
-- run). Thread i of BENCH_THREADS (which must equal wrk's -t) takes lines i,
-- i + T, i + 2T, ... and sends them in order, one per request; when a thread
-- runs out it starts again from its first token, and those requests are
-- counted as reused (the server may answer them from its cache). The request
-- is otherwise the one bench/currency.lua sends (GET, Accept:
-- application/json), built by string concatenation around a template made
-- once per thread with wrk.format.
--
-- done() prints one line for currency.sh:
--   fresh_tokens.lua: requests=N status_errors=N socket_errors=N tokens=N sent=N reused=N
-- tokens: tokens loaded (all threads); sent: requests built; reused: requests
-- that carried a token already sent once in this run.

local MARK = "\1TOKEN\1"
local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- ntok, sent and reused are globals: done() reads them with thread:get().
local tokens = {}
local idx = 0
local prefix, suffix
ntok, sent, reused = 0, 0, 0

function init(args)
   local file = os.getenv("BENCH_TOKEN_FILE")
   local nthreads = tonumber(os.getenv("BENCH_THREADS") or "")
   if not file or file == "" or not nthreads or nthreads < 1 then
      error("fresh_tokens.lua: set BENCH_TOKEN_FILE and BENCH_THREADS (= wrk -t)")
   end
   local n = 0
   for line in io.lines(file) do
      if line ~= "" then
         if n % nthreads == id then
            ntok = ntok + 1
            tokens[ntok] = line
         end
         n = n + 1
      end
   end
   if ntok == 0 then
      error("fresh_tokens.lua: no tokens for thread " .. id .. " in " .. file)
   end
   wrk.method = "GET"
   local req = wrk.format(nil, nil, {
      ["Host"] = wrk.headers["Host"],
      ["Accept"] = "application/json",
      ["Authorization"] = "Bearer " .. MARK,
   })
   local at = req:find(MARK, 1, true)
   prefix = req:sub(1, at - 1)
   suffix = req:sub(at + #MARK)
end

function request()
   idx = idx + 1
   if idx > ntok then
      idx = 1
   end
   sent = sent + 1
   if sent > ntok then
      reused = reused + 1
   end
   return prefix .. tokens[idx] .. suffix
end

function done(summary, latency, requests)
   local e = summary.errors
   local t, s, r = 0, 0, 0
   for _, thread in ipairs(threads) do
      t = t + (thread:get("ntok") or 0)
      s = s + (thread:get("sent") or 0)
      r = r + (thread:get("reused") or 0)
   end
   io.write(string.format(
      "fresh_tokens.lua: requests=%d status_errors=%d socket_errors=%d tokens=%d sent=%d reused=%d\n",
      summary.requests, e.status, e.connect + e.read + e.write + e.timeout, t, s, r))
end
