-- wrk script that collects access tokens from the token endpoint (client
-- credentials grant) into files, for bench/fresh_tokens.lua.
--
--   BENCH_CLIENT_ID=... BENCH_CLIENT_SECRET=... BENCH_TOKEN_OUT=/tmp/tok \
--   BENCH_TOKEN_COUNT=100000 BENCH_THREADS=2 \
--     wrk -t2 -c32 -d60s -s bench/fetch_tokens.lua http://127.0.0.1:9001/api/auth/token
--
-- Thread i writes the access_token of every 200 answer, one per line, to
-- $BENCH_TOKEN_OUT.i and stops once it has ceil(BENCH_TOKEN_COUNT /
-- BENCH_THREADS) of them, creating $BENCH_TOKEN_OUT.done.i. wrk itself still
-- waits for -d to pass (its main thread sleeps): bench/currency.sh waits for
-- the .done files and ends wrk with SIGINT. The request is bench/token.lua's.
--
-- done() prints one line:
--   fetch_tokens.lua: requests=N status_errors=N socket_errors=N tokens=N

-- base64 and form encoding: bench/lib.lua, next to this script.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "lib.lua")

local client_id = os.getenv("BENCH_CLIENT_ID") or ""
local client_secret = os.getenv("BENCH_CLIENT_SECRET") or ""

wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = lib.basic_auth(client_id, client_secret)

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- got is a global: done() reads it with thread:get().
local out, want, done_file
got = 0

function init(args)
   local prefix = os.getenv("BENCH_TOKEN_OUT")
   local count = tonumber(os.getenv("BENCH_TOKEN_COUNT") or "")
   local nthreads = tonumber(os.getenv("BENCH_THREADS") or "")
   if not prefix or prefix == "" or not count or not nthreads or nthreads < 1 then
      error("fetch_tokens.lua: set BENCH_TOKEN_OUT, BENCH_TOKEN_COUNT and BENCH_THREADS (= wrk -t)")
   end
   want = math.ceil(count / nthreads)
   out = assert(io.open(prefix .. "." .. id, "w"))
   done_file = prefix .. ".done." .. id
   out:setvbuf("full")
end

function response(status, headers, body)
   if status ~= 200 or got >= want then
      return
   end
   local token = body:match('"access_token"%s*:%s*"([%w%-_%.]+)"')
   if not token then
      return
   end
   out:write(token, "\n")
   got = got + 1
   if got >= want then
      out:close()
      assert(io.open(done_file, "w")):close()
      wrk.thread:stop()
   elseif got % 1000 == 0 then
      out:flush()
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local t = 0
   for _, thread in ipairs(threads) do
      t = t + (thread:get("got") or 0)
   end
   io.write(string.format(
      "fetch_tokens.lua: requests=%d status_errors=%d socket_errors=%d tokens=%d\n",
      summary.requests, e.status, e.connect + e.read + e.write + e.timeout, t))
end
