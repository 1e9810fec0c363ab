"""The stack the integration and end-to-end tests run against.

One private PostgreSQL cluster (scripts/pg.sh, or the running one named by
M2M_TEST_PG_DIR), auth-service and crypto-server daemons on free ports, nginx
in front of them (scripts/nginx-conf.sh), and helpers to talk to all of them
with a timeout on every call. Python 3 standard library only.

run.py builds one `Stack` and publishes it as `harness.STACK` before the test
cases run; the cases only use what is here.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import http.client as httpclient
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
E2E = ROOT / "tests" / "e2e"

HTTP_TIMEOUT = 10.0  # seconds, every HTTP call
TICK_MS = 500  # CURRENCY_TICK_MS of every crypto-server the tests start
DEFAULT_AUDIENCE = "http://localhost:8000/api/currency"
EXTRA_RESOURCE = "https://extra.example/api/ledger"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")

STACK = None  # set by run.py


def log(msg):
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run(cmd, timeout=60, check=True, env=None, input=None):
    """subprocess.run with captured text output and a timeout."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env=env, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {' '.join(map(str, cmd[1:3]))}... exited {p.returncode}\n"
                           f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
    return p


def b64url_json(segment):
    pad = "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(segment + pad))


def jwt_parts(token):
    """(header, payload) of a JWS compact token, decoded without verification."""
    h, p, _ = token.split(".")
    return b64url_json(h), b64url_json(p)


# ---- HTTP ---------------------------------------------------------------


class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers  # HTTPMessage: case-insensitive get()
        self.body = body
        self.elapsed = elapsed
        self._json = None

    def header(self, name):
        return self.headers.get(name) if self.headers is not None else None

    def json(self):
        if self._json is None:
            self._json = json.loads(self.body.decode("utf-8"))
        return self._json

    def is_json(self):
        try:
            self.json()
            return True
        except (ValueError, UnicodeDecodeError):
            return False

    def __repr__(self):
        body = self.body[:600].decode("utf-8", "replace")
        return f"<HTTP {self.status} {body!r}>"


def http(method, port, path, body=None, headers=None, timeout=HTTP_TIMEOUT, chunked=False):
    """One request on a fresh connection to 127.0.0.1:port; returns Resp.

    body: bytes, str, dict (sent as JSON unless a Content-Type says form) or
    None. chunked: send the body with Transfer-Encoding: chunked."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        ct = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if ct and ct.startswith("application/x-www-form-urlencoded"):
            body = urllib.parse.urlencode(body)
        else:
            body = json.dumps(body)
            if ct is None:
                headers["Content-Type"] = "application/json"
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.monotonic()
    try:
        if chunked:
            pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)] if body else []
            conn.request(method, path, body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.headers, data, time.monotonic() - start)
    finally:
        conn.close()


def form(params):
    """urlencoded body from a dict or a list of pairs (repeats allowed)."""
    return urllib.parse.urlencode(params)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id, secret):
    """RFC 6749 §2.3.1: form-urlencode both parts, then Basic."""
    raw = urllib.parse.quote_plus(client_id) + ":" + urllib.parse.quote_plus(secret)
    return "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")


class SSE:
    """A Server-Sent Events reader over a raw socket: sends one GET, parses
    the status line and headers, then decodes the chunked (or close-delimited)
    body as it arrives and yields events with their arrival time. Every read
    has a deadline."""

    def __init__(self, port, path, headers=None, timeout=5.0, tls=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:  # an ssl.SSLContext: the stream over TLS
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.raw = b""  # bytes received, not yet decoded
        self.text = b""  # decoded body, not yet parsed into events
        self.eof = False
        self.started = time.monotonic()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if not self._recv(deadline):
                raise AssertionError(f"no response head within {timeout}s: {self.raw[:300]!r}")
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        status_line, *hdrs = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for h in hdrs:
            k, _, v = h.partition(":")
            self.headers.setdefault(k.strip().lower(), v.strip())
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.length = None if self.chunked else self.headers.get("content-length")

    def header(self, name):
        return self.headers.get(name.lower())

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        return True

    def _decode(self):
        if not self.chunked:
            self.text += self.raw
            self.raw = b""
            return
        while True:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.eof = True
                self.raw = b""
                return
            if len(rest) < size + 2:
                return
            self.text += rest[:size]
            self.raw = rest[size + 2:]

    def body(self, timeout=5.0):
        """The whole body of a non-streamed (error) reply."""
        deadline = time.monotonic() + timeout
        while True:
            self._decode()
            if self.length is not None and len(self.text) >= int(self.length):
                break
            if self.eof or not self._recv(deadline):
                self._decode()
                break
        return self.text

    def next_event(self, timeout):
        """The next event (comments such as ': ping' skipped) as a dict of
        its fields plus 't' (seconds since the request); None on timeout or
        end of stream."""
        deadline = time.monotonic() + timeout
        while True:
            self._decode()
            while b"\n\n" in self.text:
                block, self.text = self.text.split(b"\n\n", 1)
                ev = {}
                for line in block.decode("utf-8").split("\n"):
                    if not line or line.startswith(":"):
                        continue
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    ev[k] = ev[k] + "\n" + v if k in ev else v
                if ev:
                    ev["t"] = time.monotonic() - self.started
                    return ev
            if not self._recv(deadline):
                return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- PostgreSQL -----------------------------------------------------------


class Postgres:
    """The tests' cluster: own (created in a temp dir) or shared (M2M_TEST_PG_DIR)."""

    def __init__(self, workdir):
        shared = os.environ.get("M2M_TEST_PG_DIR")
        self.shared = bool(shared)
        self.dir = Path(shared) if shared else Path(workdir) / "pg"
        self.started_here = False

    def pg(self, *args, timeout=90, check=True):
        return run([SCRIPTS / "pg.sh", *args], timeout=timeout, check=check)

    def setup(self):
        if self.shared:
            log(f"using the running cluster in {self.dir} (M2M_TEST_PG_DIR)")
            if self.pg("status", self.dir, check=False).returncode != 0:
                self.pg("start", self.dir)
            self.conninfo = self.pg("conninfo", self.dir, "auth_service").stdout.strip()
        else:
            port = free_port()
            log(f"creating a PostgreSQL cluster in {self.dir} on port {port}")
            self.pg("init", self.dir, port)
            self.pg("start", self.dir)
            self.started_here = True
            self.conninfo = self.pg("bootstrap", self.dir).stdout.strip().splitlines()[-1]
        self.port = int((self.dir / "port").read_text().strip())
        self.currency_conninfo = self.pg("conninfo", self.dir, "currency_service").stdout.strip()

    def passwords(self):
        out = []
        for f in sorted((self.dir / "secrets").glob("*.password")):
            out.append(f.read_text().strip())
        return out

    def running(self):
        return self.pg("status", self.dir, check=False).returncode == 0

    def stop(self):
        self.pg("stop", self.dir)

    def start(self):
        self.pg("start", self.dir)

    def exec(self, sql):
        """Runs SQL as the superuser (scripts/pg.sh exec)."""
        return self.pg("exec", self.dir, "-", sql, timeout=30)

    def query(self, sql):
        """Rows of a superuser query, as lists of strings."""
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        p = run(["runuser", "-u", "postgres", "--", bindir / "psql", "-X", "-q", "-At",
                 "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", self.dir / "run", "-p",
                 str(self.port), "-d", "m2m", "-c", sql], timeout=30)
        return [line.split("\t") for line in p.stdout.splitlines() if line]

    def teardown(self):
        if self.started_here:
            self.pg("stop", self.dir, check=False)
        elif self.shared and not self.running():
            # We stopped the shared cluster in a test: leave it as we found it.
            self.pg("start", self.dir, check=False)


# ---- auth-service -----------------------------------------------------------


class Daemon:
    """One daemon process of ours with its own ports and log file; the
    subclasses say which binary, environment and health check."""

    kind = "daemon"

    def spawn(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.binary)], env=self.env, stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.stack.processes.append(self)
        return self

    def health_ok(self):
        raise NotImplementedError

    def start(self, timeout=30):
        """Spawns and waits until health_ok()."""
        self.spawn()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} ({self.name}) exited {self.proc.returncode} "
                                   f"at start; log:\n{self.log_text()[-3000:]}")
            try:
                last = self.health_ok()
                if last is True:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} ({self.name}) not healthy after {timeout}s "
                           f"(last: {last}); log:\n{self.log_text()[-3000:]}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code (SIGKILL after timeout: -9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        self.logf.close()
        if self in self.stack.processes:
            self.stack.processes.remove(self)
        return self.returncode

    def log_text(self):
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def sanitizer_findings(self):
        text = self.log_text()
        return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]

    # HTTP shortcuts to this daemon
    def get(self, path, **kw):
        return http("GET", self.port, path, **kw)

    def post(self, path, body=None, headers=None, **kw):
        return http("POST", self.port, path, body=body, headers=headers, **kw)

    def metrics(self):
        """The internal port's /metrics as {'name{labels}': float}."""
        r = http("GET", self.metrics_port, "/metrics")
        if r.status != 200:
            raise AssertionError(f"{self.kind} ({self.name}) /metrics: {r!r}")
        return parse_metrics(r.body.decode("utf-8", "replace"))


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


class AuthService(Daemon):
    """One auth-service process with its own ports and log file."""

    count = 0
    kind = "auth-service"

    def __init__(self, stack, name, env_overrides=None, key_dir=None):
        AuthService.count += 1
        self.stack = stack
        self.name = name
        self.binary = stack.binary
        self.port = free_port()
        self.metrics_port = free_port()
        self.key_dir = Path(key_dir) if key_dir else stack.key_dir
        self.log_path = stack.workdir / f"auth-{AuthService.count:02d}-{name}.log"
        self.env = stack.auth_env(self.port, self.metrics_port, self.key_dir)
        for k, v in (env_overrides or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.proc = None
        self.returncode = None
        stack.auth_logs.append(self.log_path)

    def health_ok(self):
        r = http("GET", self.port, "/api/auth/health", timeout=2)
        return True if r.status == 200 else r

    def cli(self, *args, timeout=60):
        """`auth-service ARGS...` with this daemon's environment."""
        return run([self.stack.binary, *args], env=self.env, timeout=timeout, check=False)


class CryptoServer(Daemon):
    """One crypto-server process: API port, internal (metrics) port, log file.
    Same database as auth-service (role currency_service), keys from the main
    auth-service's JWKS, ticks every TICK_MS."""

    count = 0
    kind = "crypto-server"

    def __init__(self, stack, name, env_overrides=None, port=None, metrics_port=None):
        CryptoServer.count += 1
        self.stack = stack
        self.name = name
        self.binary = stack.currency_binary
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path = stack.workdir / f"currency-{CryptoServer.count:02d}-{name}.log"
        self.env = stack.currency_env(self.port, self.metrics_port)
        for k, v in (env_overrides or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.proc = None
        self.returncode = None
        stack.currency_logs.append(self.log_path)

    def health_ok(self):
        r = http("GET", self.port, "/api/currency/health", timeout=2)
        return True if r.status == 200 else r

    def put(self, path, body=None, headers=None, **kw):
        return http("PUT", self.port, path, body=body, headers=headers, **kw)


class Agent(Daemon):
    """One crypto-client (the OAuth2 client agent): API port, internal port,
    its own state file, talking to the suite through nginx (AGENT_SERVER_URL
    = the nginx URL, like the seed's client)."""

    count = 0
    kind = "crypto-client"

    def __init__(self, stack, name, env_overrides=None, port=None, metrics_port=None,
                 state_file=None):
        Agent.count += 1
        self.stack = stack
        self.name = name
        self.binary = stack.agent_binary
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path = stack.workdir / f"agent-{Agent.count:02d}-{name}.log"
        self.state_file = Path(state_file) if state_file else \
            stack.workdir / "agent-state" / f"{Agent.count:02d}-{name}" / "state.json"
        self.env = stack.agent_env(self.port, self.metrics_port, self.state_file)
        for k, v in (env_overrides or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.proc = None
        self.returncode = None
        stack.agent_logs.append(self.log_path)

    def health_ok(self):
        r = http("GET", self.port, "/api/health", timeout=2)
        return True if r.status == 200 else r

    def status(self):
        r = self.get("/api/status")
        if r.status != 200:
            raise AssertionError(f"agent ({self.name}) /api/status: {r!r}")
        return r.json()

    def configure(self, body):
        if isinstance(body, dict) and isinstance(body.get("client_secret"), str):
            self.stack.secrets.add(body["client_secret"])
        return self.post("/api/configure", body)


# ---- nginx -------------------------------------------------------------------


class Nginx:
    def __init__(self, stack, port):
        self.stack = stack
        self.port = port
        self.dir = stack.workdir / "nginx"
        self.agent_port = free_port()  # the agent's listener (the seed's :8001)
        # The TLS listener (the stack's :8443) and its self-signed certificate
        # (scripts/tls-cert.sh): tls_dir/cert.pem is the trust root.
        self.tls_port = free_port()
        self.tls_dir = self.dir / "tls"
        self.proc = None

    def start(self, auth_port, currency_port, agent_port=None):
        args = [SCRIPTS / "nginx-conf.sh", self.dir, "--listen", f"127.0.0.1:{self.port}",
                "--auth", f"127.0.0.1:{auth_port}", "--currency", f"127.0.0.1:{currency_port}",
                "--tls-listen", f"127.0.0.1:{self.tls_port}", "--tls-dir", self.tls_dir]
        if agent_port:
            args += ["--agent-listen", f"127.0.0.1:{self.agent_port}",
                     "--agent", f"127.0.0.1:{agent_port}"]
        # / and /docs/ (Swagger UI over the OpenAPI documents) as files, built
        # by scripts/docs.sh; should that fail (no npm registry on a first
        # run), nginx runs without them and only the docs cases fail.
        self.static_dir, self.static_error = build_docs_site(self.stack.workdir / "static")
        if self.static_dir:
            args += ["--static", self.static_dir]
        run(args, timeout=30)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.errlog = open(self.dir / "logs" / "stderr.log", "ab")
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-e",
                                      str(self.dir / "logs" / "error.log"), "-c",
                                      str(self.dir / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=self.errlog, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, 15):
            raise RuntimeError("nginx did not start listening; error.log:\n" +
                               (self.dir / "logs" / "error.log").read_text()[-2000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.errlog.close()

    def get(self, path, **kw):
        return http("GET", self.port, path, **kw)

    def post(self, path, body=None, headers=None, **kw):
        return http("POST", self.port, path, body=body, headers=headers, **kw)

    def agent_get(self, path, **kw):
        return http("GET", self.agent_port, path, **kw)

    def agent_post(self, path, body=None, headers=None, **kw):
        return http("POST", self.agent_port, path, body=body, headers=headers, **kw)


# ---- the stack -----------------------------------------------------------------


class Stack:
    def __init__(self, build_dir):
        self.build_dir = Path(build_dir).resolve()
        self.binary = self.build_dir / "auth-service" / "auth-service"
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"{self.binary} not found: build first (cmake --build {build_dir})")
        # A missing or broken crypto-server fails the currency cases only.
        self.currency_binary = self.build_dir / "crypto-server" / "crypto-server"
        self.agent_binary = self.build_dir / "crypto-client" / "crypto-client"
        self.asan = self._is_sanitized()
        self.workdir = Path(tempfile.mkdtemp(prefix="m2m-it-"))
        # nginx workers (nobody) must reach their directory; pg.sh adds o+x itself.
        os.chmod(self.workdir, 0o711)
        self.key_dir = self.workdir / "keys"
        self.run_id = os.urandom(3).hex()
        self.pg = Postgres(self.workdir)
        self.processes = []
        self.auth_logs = []
        self.currency_logs = []
        self.agent_logs = []
        self.agent = None  # the main agent, behind nginx's agent listener
        self.agent_error = None
        self.nginx_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.nginx_port}"
        self.nginx = Nginx(self, self.nginx_port)
        self.auth = None
        self.currency = None  # the main crypto-server, behind nginx
        self.currency_error = None  # why it did not start, if it did not
        self.full_run = True  # False when run.py -k selects a subset
        # Collected for the hygiene test: every secret sent, every token issued.
        self.secrets = set()
        self.tokens = set()
        self.currency_tokens = set()  # tokens forged by the tests (never issued)

    def _is_sanitized(self):
        cache = self.build_dir / "CMakeCache.txt"
        try:
            return bool(re.search(r"^M2M_SANITIZE:BOOL=ON$", cache.read_text(), re.M))
        except OSError:
            return False

    def uid(self, name):
        """A client id unique to this run (the shared cluster may hold others)."""
        return f"it{self.run_id}-{name}"

    def auth_env(self, port, metrics_port, key_dir):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
        env.update({
            "AUTH_PORT": str(port),
            "AUTH_METRICS_PORT": str(metrics_port),
            "AUTH_KEY_DIR": str(key_dir),
            "AUTH_DATABASE_URL": self.pg.conninfo,
            "AUTH_ISSUER": self.issuer,
            "AUTH_DEFAULT_AUDIENCE": DEFAULT_AUDIENCE,
            "AUTH_RESOURCES": EXTRA_RESOURCE,
            "AUTH_KDF_LOG_N": "12",
            # Every request logged (the default logs only 4xx/5xx): the
            # request-id and hygiene cases read these lines.
            "AUTH_ACCESS_LOG": "true",
        })
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return env

    def jwks_url(self):
        """The main auth-service's JWKS, direct (its port survives restarts)."""
        return f"http://127.0.0.1:{self.auth_port}/api/auth/jwks.json"

    def currency_env(self, port, metrics_port):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CURRENCY_")}
        env.update({
            "CURRENCY_PORT": str(port),
            "CURRENCY_METRICS_PORT": str(metrics_port),
            "CURRENCY_DATABASE_URL": self.pg.currency_conninfo,
            "CURRENCY_JWKS_URL": self.jwks_url(),
            "CURRENCY_ISSUER": self.issuer,
            "CURRENCY_AUDIENCE": DEFAULT_AUDIENCE,
            "CURRENCY_TICK_MS": str(TICK_MS),
            "CURRENCY_THREADS": "2",
            # Every request logged: the hygiene case reads these lines.
            "CURRENCY_ACCESS_LOG": "true",
        })
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return env

    def agent_env(self, port, metrics_port, state_file):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
        env.update({
            "AGENT_PORT": str(port),
            "AGENT_METRICS_PORT": str(metrics_port),
            "AGENT_SERVER_URL": self.issuer,  # through nginx, like the seed's client
            "AGENT_STATE_FILE": str(state_file),
            "AGENT_ACCESS_LOG": "true",
            "AGENT_THREADS": "2",
        })
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return env

    def setup(self):
        self.pg.setup()
        # The first start, on an empty key directory, is itself under test
        # (cases.lifecycle.FirstStart reads this record). Should it fail, the
        # key directory is seeded with an openssl-made key so that the rest
        # of the suite still runs, and that test reports the failure.
        first = AuthService(self, "main")
        try:
            self.auth = first.start()
            self.first_start = {"ok": True, "log": first.log_path}
        except RuntimeError as e:
            first.stop(timeout=5)
            self.auth_logs.remove(first.log_path)  # reported by FirstStart, not Hygiene
            self.first_start = {"ok": False, "error": str(e), "log": first.log_path,
                                "code": first.returncode}
            log("the first start on an empty key directory FAILED (see FirstStart); "
                "seeding the key directory with openssl to run the other cases")
            seed_key(self.key_dir)
            self.auth = AuthService(self, "main").start()
        self.auth_port = self.auth.port
        # The currency cases report a crypto-server that cannot start; the
        # auth-service cases run regardless.
        cs = None
        try:
            if not os.access(self.currency_binary, os.X_OK):
                raise RuntimeError(f"{self.currency_binary} not found (not built?)")
            cs = CryptoServer(self, "main")
            self.currency = cs.start()
        except (RuntimeError, OSError) as e:
            self.currency_error = str(e)
            log(f"crypto-server did not start: the currency cases will fail:\n{str(e)[:2000]}")
            if cs is not None:
                cs.stop(timeout=5)
        currency_port = cs.port if cs is not None else free_port()
        self.currency_ports = (currency_port, cs.metrics_port if cs else free_port())
        # The main agent starts unconfigured (the seed's flow configures it);
        # the agent cases report one that cannot start.
        ag = None
        try:
            if not os.access(self.agent_binary, os.X_OK):
                raise RuntimeError(f"{self.agent_binary} not found (not built?)")
            ag = Agent(self, "main")
            self.agent = ag.start()
        except (RuntimeError, OSError) as e:
            self.agent_error = str(e)
            log(f"crypto-client did not start: the agent cases will fail:\n{str(e)[:2000]}")
            if ag is not None:
                ag.stop(timeout=5)
        self.agent_port = ag.port if ag is not None else free_port()
        self.nginx.start(self.auth.port, currency_port, self.agent_port)
        ensure_node_modules()
        log(f"stack up: issuer {self.issuer}, auth-service :{self.auth.port} "
            f"(metrics :{self.auth.metrics_port}), crypto-server :{self.currency_ports[0]} "
            f"(metrics :{self.currency_ports[1]}), crypto-client :{self.agent_port} "
            f"(nginx :{self.nginx.agent_port}), postgres :{self.pg.port}, "
            f"{'ASan/UBSan' if self.asan else 'plain'} build {self.build_dir}")

    def restart_main(self):
        """SIGTERM the main daemon, start a new one with the same env, key dir
        and ports. Returns the old process and its exit code."""
        old = self.auth
        code = old.stop()
        self.start_main_again(old)
        return old, code

    def start_main_again(self, old):
        """A new main auth-service with the env, key dir and ports of `old`
        (stopped)."""
        new = AuthService(self, "main")
        new.port, new.metrics_port, new.env = old.port, old.metrics_port, dict(old.env)
        self.auth = new.start()
        return self.auth

    def start_currency_again(self, old):
        """A new main crypto-server on the ports of `old` (stopped), so that
        nginx reaches it."""
        new = CryptoServer(self, "main", port=old.port, metrics_port=old.metrics_port)
        new.env = dict(old.env)
        self.currency = new.start()
        return self.currency

    def start_agent_again(self, old):
        """A new main agent on the ports and state file of `old` (stopped)."""
        new = Agent(self, "main", port=old.port, metrics_port=old.metrics_port,
                    state_file=old.state_file)
        new.env = dict(old.env)
        self.agent = new.start()
        return self.agent

    def teardown(self):
        for p in list(self.processes):
            try:
                p.stop(timeout=10)
            except Exception as e:  # keep tearing down the rest
                log(f"stopping {p.name}: {e}")
        try:
            self.nginx.stop()
        except Exception as e:
            log(f"stopping nginx: {e}")
        try:
            self.pg.teardown()
        except Exception as e:
            log(f"stopping postgres: {e}")
        if os.environ.get("M2M_TEST_KEEP"):
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- helpers the tests share -------------------------------------------------

    def register(self, body, via=None):
        """POST /api/auth/register (JSON); remembers secrets."""
        if isinstance(body, dict) and isinstance(body.get("client_secret"), str):
            self.secrets.add(body["client_secret"])
        target = via or self.auth
        r = target.post("/api/auth/register", body)
        if r.status == 201 and r.is_json() and "client_secret" in r.json():
            self.secrets.add(r.json()["client_secret"])
        return r

    def new_client(self, name, secret=None, via=None):
        """Registers a fresh self-service client; returns (client_id, secret)."""
        cid = self.uid(name)
        secret = secret or "s3cret-" + os.urandom(12).hex()
        r = self.register({"client_id": cid, "client_secret": secret, "app_name": name}, via=via)
        if r.status != 201:
            raise AssertionError(f"registering {cid}: {r}")
        return cid, secret

    def token(self, body=None, headers=None, via=None, **kw):
        """POST /api/auth/token; remembers issued tokens."""
        target = via or self.auth
        r = target.post("/api/auth/token", body, headers, **kw)
        if r.status == 200 and r.is_json() and "access_token" in r.json():
            self.tokens.add(r.json()["access_token"])
        return r

    def token_post(self, cid, secret, extra=None, via=None):
        """client_secret_post form request."""
        self.secrets.add(secret)
        params = [("grant_type", "client_credentials"), ("client_id", cid),
                  ("client_secret", secret)] + list(extra or [])
        return self.token(form(params), FORM, via=via)

    def cli_create(self, *args):
        """`auth-service client create ARGS` with the main daemon's env."""
        p = self.auth.cli("client", "create", *args)
        if p.returncode == 0:
            try:
                doc = json.loads(p.stdout)
                if "client_secret" in doc:
                    self.secrets.add(doc["client_secret"])
            except ValueError:
                pass
        return p


def seed_key(key_dir):
    """A P-256 key in the keystore's layout (dir 0700, NNNNNNNNNN-name.pem 0600)."""
    key_dir = Path(key_dir)
    key_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(key_dir, 0o700)
    path = key_dir / f"{int(time.time()):010d}-seeded.pem"
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", path], timeout=30)
    os.chmod(path, 0o600)
    return path


# ---- node helpers -----------------------------------------------------------------


def build_docs_site(out):
    """scripts/docs.sh OUT (npm ci of docs/ the first time, then cached):
    (OUT, None), or (None, why) when it fails."""
    try:
        run([SCRIPTS / "docs.sh", out], timeout=300)
        return out, None
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        log(f"scripts/docs.sh failed: nginx will not serve /docs/:\n{str(e)[:2000]}")
        return None, str(e)


def ensure_node_modules():
    if (E2E / "node_modules" / "jose").is_dir() and (E2E / "node_modules" / "openid-client").is_dir():
        return
    cmd = ["npm", "ci", "--no-audit", "--no-fund"] if (E2E / "package-lock.json").exists() \
        else ["npm", "install", "--no-audit", "--no-fund"]
    log(f"installing the e2e verifiers: {' '.join(cmd)} (in {E2E})")
    p = subprocess.run(cmd, cwd=E2E, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def node(script, *args, timeout=30):
    """Runs tests/e2e/SCRIPT with ARGS; returns (exit code, parsed JSON or None, stderr)."""
    p = subprocess.run(["node", str(E2E / script), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=E2E)
    doc = None
    for line in reversed(p.stdout.splitlines()):
        try:
            doc = json.loads(line)
            break
        except ValueError:
            continue
    return p.returncode, doc, p.stderr


def jose_verify(tokens, audience=(DEFAULT_AUDIENCE,), jwks_url=None, issuer=None):
    """Verifies tokens with jose against the JWKS through nginx; returns the document."""
    s = STACK
    args = ["--jwks", jwks_url or f"{s.issuer}/api/auth/jwks.json", "--issuer", issuer or s.issuer]
    for a in audience or ():
        args += ["--audience", a]
    code, doc, err = node("verify.mjs", *args, *tokens)
    if code != 0 or doc is None:
        raise AssertionError(f"verify.mjs exited {code}: {err[-2000:]}")
    return doc
