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

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding (LuaJIT / Lua 5.1: arithmetic, no bit operators).
local function base64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(n / 262144) % 64
      local c2 = math.floor(n / 4096) % 64
      local c3 = math.floor(n / 64) % 64
      local c4 = n % 64
      out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1)
         .. alphabet:sub(c2 + 1, c2 + 1)
         .. (b and alphabet:sub(c3 + 1, c3 + 1) or "=")
         .. (c and alphabet:sub(c4 + 1, c4 + 1) or "=")
   end
   return table.concat(out)
end

-- application/x-www-form-urlencoded encoding of one value.
local function form_encode(s)
   s = s:gsub("[^%w%-%._~ ]", function(ch)
      return string.format("%%%02X", ch:byte())
   end)
   return (s:gsub(" ", "+"))
end

local client_id = os.getenv("BENCH_CLIENT_ID")
local client_secret = os.getenv("BENCH_CLIENT_SECRET") or ""

wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
if client_id and client_id ~= "" then
   wrk.headers["Authorization"] = "Basic "
      .. base64(form_encode(client_id) .. ":" .. form_encode(client_secret))
end

-- One plain line for token.sh: how many requests failed and how.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "token.lua: requests=%d status_errors=%d socket_errors=%d\n",
      summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
