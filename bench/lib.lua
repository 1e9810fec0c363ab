-- Shared by the wrk scripts that post to the token endpoint (token.lua,
-- fetch_tokens.lua): client_secret_basic authentication (RFC 6749 §2.3.1: id
-- and secret are form-urlencoded, joined with ':', then base64). Load it with
-- a path relative to the calling script (wrk's Lua has no module path of its
-- own: require would look in the working directory):
--
--   local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "lib.lua")
--
-- Runs once per Lua state (wrk's main one and each thread's), when the script
-- is loaded: nothing here is called per request.

local M = {}

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding (LuaJIT / Lua 5.1: arithmetic, no bit operators).
function M.base64(s)
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
function M.form_encode(s)
   s = s:gsub("[^%w%-%._~ ]", function(ch)
      return string.format("%%%02X", ch:byte())
   end)
   return (s:gsub(" ", "+"))
end

-- The Authorization header's value for client_secret_basic.
function M.basic_auth(client_id, client_secret)
   return "Basic " .. M.base64(M.form_encode(client_id) .. ":" .. M.form_encode(client_secret))
end

return M
