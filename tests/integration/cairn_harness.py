"""cairn_harness: the plumbing the integration tests in this folder share.

Each test_*.py here keeps its own scenario (what it posts, breaks and
checks); this module holds what they all need around it, once:

  argument_parser, parse_args, cluster_env
      the common command line (--agent-bin, --aggregator-bin, --cli-bin as
      tests/CMakeLists.txt passes them, --bin-dir, --keep) and the
      environment that tells deploy/local-cluster.sh which programs to run;
  TestRun, run_test
      one run of a test: its temporary directory, its Failures, the clusters
      and processes to stop at the end (always, also after an exception),
      the sanitizer check of every log, the verdict (PASS/FAILED line, exit
      status, logs shown on failure, files kept on failure or with --keep);
  Failures
      collected failed checks, reported by kind with a few examples;
  Cluster
      a cluster of deploy/local-cluster.sh: up/down/stop-*/start-*, its
      cluster.env, its logs, pid files and configs, and commands run inside
      its network namespace when it has one;
  Bucket, read_trail_file
      the local-directory bucket: every delivered {"Records":[...]} file;
  request, post_events, scrape, Agent
      HTTP to the daemons: one request, a POST of records to an agent, a
      /metrics scrape, and a keep-alive agent client that retries;
  Process, free_port, wait_port
      a server process the test starts itself (own session, stopped by PID);
  aws_env
      the environment of an AWS CLI call that sees only our keys.

Only the standard library. Every wait is bounded; every address is loopback.
A test finds this module through sys.path (its own folder), set before the
import, with sys.dont_write_bytecode so nothing is written into the tree.
"""

import argparse
import collections
import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER_SCRIPT = os.path.join(REPO, "deploy", "local-cluster.sh")
# What ASan, LSan, TSan, MSan and UBSan print when they find something.
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:")
BIN_ARGS = (("agent_bin", "CAIRN_AGENT_BIN"), ("aggregator_bin", "CAIRN_AGGREGATOR_BIN"),
            ("cli_bin", "CAIRN_CLI_BIN"), ("bin_dir", "CAIRN_BIN_DIR"))


def log(msg):
    """Prints msg with the time of day, at once (ctest shows it on failure)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- failed checks -------------------------------------------------------------

class Failures:
    """Collects failed checks; each kind is reported with a few examples.

    echo=True also logs "FAIL: kind" when a check fails, so the failure shows
    in the timeline of the test's output."""

    def __init__(self, echo=False):
        self.items = collections.OrderedDict()  # kind -> [detail, ...]
        self.echo = echo

    def add(self, kind, detail=""):
        self.items.setdefault(kind, []).append(detail)
        if self.echo:
            log(f"FAIL: {kind}")

    def check(self, ok, kind, detail=""):
        """Records a failure of kind unless ok; returns ok."""
        if not ok:
            self.add(kind, detail)
        return ok

    def wait_for(self, what, predicate, timeout, interval=0.3):
        """Calls predicate every interval s until it is true (returns True) or
        timeout s have passed (records a failure, returns False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return self.check(False, f"timed out after {timeout} s waiting for {what}")

    def __bool__(self):
        return bool(self.items)

    def __len__(self):
        return sum(len(details) for details in self.items.values())

    def report(self):
        for kind, details in self.items.items():
            print(f"FAIL: {kind} ({len(details)} times)")
            for d in details[:5]:
                if d:
                    print(f"      {d}")


# --- the command line ----------------------------------------------------------

def argument_parser(doc=None, bins_required=False):
    """The options every test takes; a test adds its own to the parser."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent-bin", required=bins_required,
                    help="path of cairn-agent (else found by local-cluster.sh)")
    ap.add_argument("--aggregator-bin", required=bins_required, help="path of cairn-aggregator")
    ap.add_argument("--cli-bin", required=bins_required, help="path of cairn (the CLI: keygen, query, status)")
    ap.add_argument("--bin-dir", help="CAIRN_BIN_DIR for local-cluster.sh (a build directory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return ap


def parse_args(ap, argv=None):
    """Parses and makes the program paths absolute (tests change directory)."""
    args = ap.parse_args(argv)
    for name, _ in BIN_ARGS:
        if getattr(args, name, None):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    return args


def cluster_env(args, base=None):
    """base (default: this process's environment) plus the CAIRN_*_BIN
    variables through which local-cluster.sh runs the programs given."""
    env = dict(os.environ if base is None else base)
    for name, var in BIN_ARGS:
        if getattr(args, name, None):
            env[var] = getattr(args, name)
    return env


def run(cmd, env=None, timeout=120, **kwargs):
    """Runs cmd to the end; stdout and stderr captured as text."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def read_env(path):
    """The KEY="value" lines of a file such as cluster.env, as a dict."""
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'^([A-Z_][A-Z0-9_]*)="(.*)"\s*$', line)
            if m:
                env[m.group(1)] = m.group(2)
    return env


def is_loopback(url):
    return (urllib.parse.urlsplit(url).hostname or "").startswith("127.")


# --- a local cluster -----------------------------------------------------------

class Cluster:
    """A cluster of deploy/local-cluster.sh in directory dir, run with env.

    After up() (or load(), for one already up) the settings of cluster.env
    are attributes; commands and HTTP requests that must reach it from inside
    its network namespace (--netns) go through run_inside()/get_json()."""

    def __init__(self, cdir, env):
        self.dir, self.env = cdir, env
        self.cenv = {}

    def ctl(self, cmd, *extra, check=True):
        """local-cluster.sh CMD --dir DIR EXTRA...; logs its output. Raises
        unless it exits 0 (check=False: returns the exit status)."""
        args = [CLUSTER_SCRIPT, cmd, "--dir", self.dir, *extra]
        proc = subprocess.run(args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=120)
        for line in proc.stdout.splitlines():
            log(f"  local-cluster.sh: {line}")
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}")
        return proc.returncode

    def up(self, *extra):
        """Starts the cluster (local-cluster.sh up EXTRA...), then load()."""
        log(f"starting the cluster in {self.dir}")
        self.ctl("up", *extra)
        return self.load()

    def load(self):
        """Reads cluster.env; refuses (AssertionError) any address not on loopback."""
        self.cenv = read_env(self.path("cluster.env"))
        c = self.cenv
        self.netns = c.get("CAIRN_NETNS", "")
        self.prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.regions = c["CAIRN_REGIONS"].split()
        self.agent_urls = c["CAIRN_AGENT_URLS"].split()              # in the order of regions
        self.agent_url = dict(zip(self.regions, self.agent_urls))    # region -> URL
        self.agent_addrs = dict(zip(self.regions, c.get("CAIRN_AGENT_ADDRS", "").split()))
        self.health_url = c["CAIRN_AGGREGATOR_HEALTH_URL"]
        self.agg_url = self.health_url.rsplit("/health", 1)[0]      # /metrics, /health, status
        self.bucket_dir = c["CAIRN_BUCKET_DIR"]
        self.store_dir = c["CAIRN_STORE_DIR"]
        self.bucket = Bucket(self.bucket_dir)
        for url in self.agent_urls + [self.health_url, c.get("CAIRN_QUERY_URL", "http://127.0.0.1")]:
            assert is_loopback(url), f"refusing a non-loopback URL {url}"
        return self

    def path(self, name):
        return os.path.join(self.dir, name)

    def pid(self, name):
        """The PID local-cluster.sh recorded for name ("aggregator", "agent-REGION")."""
        with open(self.path(f"{name}.pid")) as f:
            return int(f.read().strip())

    def log_text(self, name, offset=0):
        """name.log from byte offset on ("" while it does not exist)."""
        try:
            with open(self.path(f"{name}.log"), errors="replace") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return ""

    def log_size(self, name):
        try:
            return os.path.getsize(self.path(f"{name}.log"))
        except FileNotFoundError:
            return 0

    def set_conf_keys(self, name, values):
        """Rewrites the "key = ..." line of each key in name.conf (each must
        occur exactly once) to "key = value"."""
        path = self.path(f"{name}.conf")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for key, value in values.items():
            text, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", f"{key} = {value}", text)
            if n != 1:
                raise RuntimeError(f"{path}: key {key} found {n} times")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def insert_conf_lines(self, name, section, lines):
        """Adds lines (without newlines) at the top of [section] in name.conf."""
        path = self.path(f"{name}.conf")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        head = f"[{section}]\n"
        if head not in text:
            raise RuntimeError(f"{path} has no [{section}] section")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text.replace(head, head + "".join(f"{ln}\n" for ln in lines), 1))
        os.replace(path + ".tmp", path)

    def run_inside(self, *cmd, check=True, timeout=30, input=None):
        """Runs cmd inside the cluster's namespace (or here, without one)."""
        proc = subprocess.run(self.prefix + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self.prefix + list(cmd))} exited {proc.returncode}: "
                               f"{proc.stderr.strip()[:500]}")
        return proc

    def get_json(self, url):
        """GET url from inside the namespace; parsed JSON or None."""
        proc = self.run_inside("curl", "-s", "--max-time", "2", url, check=False, timeout=10)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return None

    def events_stored(self):
        """events_stored of the aggregator's /health, or None without an answer."""
        h = self.get_json(self.health_url)
        return h.get("events_stored") if isinstance(h, dict) else None

    def down(self, failures):
        """Stops every process of the cluster (by its pid files) and checks
        that nothing is left: no pid file, no namespace."""
        if not os.path.isdir(self.dir):
            return
        log(f"stopping the cluster in {self.dir}")
        netns = self.cenv.get("CAIRN_NETNS", "")
        if not self.cenv and os.path.exists(self.path("cluster.env")):
            netns = read_env(self.path("cluster.env")).get("CAIRN_NETNS", "")
        try:
            failures.check(self.ctl("down", check=False) == 0, "local-cluster.sh down failed", self.dir)
        except Exception as e:  # noqa: BLE001 - reported; the checks below still run
            failures.add("local-cluster.sh down failed", str(e))
        for f in os.listdir(self.dir):
            failures.check(not f.endswith(".pid"), "a pid file remains after down", f)
        failures.check(not os.path.exists(self.path("netns")), "the namespace record remains after down")
        if netns:
            left = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
            failures.check(netns not in left.split(), "the network namespace remains after down", netns)

    def logs(self):
        """The names of the cluster's log files (and of processes the test
        started into its directory), sorted."""
        if not os.path.isdir(self.dir):
            return []
        return sorted(n for n in os.listdir(self.dir) if n.endswith(".log"))

    def sanitizer_reports(self):
        """"dir/file:line: text" of every sanitizer report in the logs."""
        found = []
        for name in self.logs():
            with open(self.path(name), errors="replace") as f:
                for n, line in enumerate(f, 1):
                    if SANITIZER_RE.search(line):
                        found.append(f"{os.path.basename(self.dir)}/{name}:{n}: {line.strip()[:200]}")
        return found

    def tail_logs(self, lines=30):
        for name in self.logs():
            with open(self.path(name), errors="replace") as f:
                content = f.read().splitlines()
            print(f"---- last {lines} lines of {self.path(name)} ----")
            for line in content[-lines:]:
                print(f"  {line[:400]}")


# --- one run of a test ---------------------------------------------------------

class TestRun:
    """One run of an integration test: a temporary directory under the
    system's temp dir, named by prefix; the Failures; the clusters and
    other things to stop at the end, and the verdict.

        t = TestRun("integration_x", args, "cairn-x-")
        return t.run(scenario, t)      # the exit status of the test
    """

    def __init__(self, name, args, prefix, failures=None, tail_lines=30):
        self.name, self.args, self.tail_lines = name, args, tail_lines
        self.failures = failures if failures is not None else Failures()
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.env = cluster_env(args)
        self.clusters = []   # Cluster, stopped at the end in this order
        self.cleanups = []   # (what, callable), called at the end before the clusters stop

    def cluster(self, name="cluster", env=None):
        """A Cluster in TMP/name (not started), stopped at the end."""
        cl = Cluster(os.path.join(self.tmp, name), self.env if env is None else env)
        self.clusters.append(cl)
        return cl

    def on_stop(self, what, fn):
        """Calls fn at the end (also after a failure), before the clusters
        stop; an exception from it is a failure "could not stop WHAT"."""
        self.cleanups.append((what, fn))

    def run(self, scenario, *args, summary=None):
        """Runs scenario(*args); whatever happens, stops everything and checks
        the logs. Prints the verdict (after summary(), if given) and returns
        the exit status: 0 pass, 1 fail."""
        f = self.failures
        crashed = None
        try:
            scenario(*args)
        except Exception as e:  # noqa: BLE001 - report anything, then clean up
            crashed = e
            f.add("the test could not run to the end", f"{type(e).__name__}: {e}")
        finally:
            for what, fn in self.cleanups:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001
                    f.add(f"could not stop {what}", str(e))
            for cl in self.clusters:
                cl.down(f)
        for cl in self.clusters:
            for report in cl.sanitizer_reports():
                f.add("sanitizer report in a log", report)
        if f:
            for cl in self.clusters:
                cl.tail_logs(self.tail_lines)
            f.report()
            if crashed is not None:
                traceback.print_exception(type(crashed), crashed, crashed.__traceback__)
            if summary:
                print(summary())
            print(f"FAILED (files kept in {self.tmp})")
            return 1
        if getattr(self.args, "keep", False):
            print(f"files kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if summary:
            print(summary())
        print(f"PASS: {self.name}")
        return 0


def run_test(name, prefix, scenario, doc=None, bins_required=False, failures=None, tail_lines=30):
    """The whole main() of a test that takes only the common options: parses
    them, runs scenario(t) in a TestRun (see there) and returns its exit
    status."""
    args = parse_args(argument_parser(doc, bins_required=bins_required))
    t = TestRun(name, args, prefix, failures=failures, tail_lines=tail_lines)
    return t.run(scenario, t)


# --- the bucket ----------------------------------------------------------------

def read_trail_file(path):
    """Reads a delivered file: (records, text, None) when it is gzip'd UTF-8
    {"Records":[...]}, else (None, text or None, what is wrong)."""
    try:
        with open(path, "rb") as f:
            text = gzip.decompress(f.read()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        return (None, None, f"not valid gzip of UTF-8: {e}")
    try:
        doc = json.loads(text)
    except ValueError as e:
        return (None, text, f"not JSON: {e}")
    if not isinstance(doc, dict) or list(doc) != ["Records"] or not isinstance(doc["Records"], list):
        return (None, text, 'not {"Records":[...]}')
    return (doc["Records"], text, None)


class Bucket:
    """The local-directory bucket; caches parsed files by (mtime, size, inode)."""

    def __init__(self, root):
        self.root = root
        self.cache = {}  # relpath -> (stat key, parsed)

    def scan(self):
        """{relpath: (records or None, raw text or None, error or None)} of
        every file, digests too; a file not named .json.gz is an error."""
        out = {}
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self.root)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # renamed away while we looked
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
                cached = self.cache.get(rel)
                if not cached or cached[0] != key:
                    parsed = (read_trail_file(path) if rel.endswith(".json.gz")
                              else (None, None, "not a .json.gz file"))
                    cached = self.cache[rel] = (key, parsed)
                out[rel] = cached[1]
        return out

    def records(self):
        """(every record of the trail files, ["relpath: error" of each trail
        file that does not read]); digests and other files are left out."""
        records, bad = [], []
        for rel, (recs, _, err) in sorted(self.scan().items()):
            if "CloudTrail-Digest" in rel or not rel.endswith(".json.gz"):
                continue
            if err is not None:
                bad.append(f"{rel}: {err}")
            else:
                records.extend(recs)
        return records, bad

    def event_id_counts(self):
        """(Counter of eventIDs over the trail files, their read errors)."""
        records, bad = self.records()
        return collections.Counter(r.get("eventID") if isinstance(r, dict) else None
                                   for r in records), bad

    def keys(self):
        """The relpaths of every .json.gz object (read or not)."""
        return {os.path.relpath(os.path.join(d, n), self.root)
                for d, _, names in os.walk(self.root) for n in names if n.endswith(".json.gz")}


# --- HTTP ----------------------------------------------------------------------

def request(url, method="GET", body=None, headers=None, timeout=30):
    """One request on its own connection: (status, body text, {lower-case
    header: value}). A body is sent as application/json unless headers say."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, (u.path or "/") + ("?" + u.query if u.query else ""), body=body,
                     headers=hdrs)
        resp = conn.getresponse()
        data = resp.read().decode(errors="replace")
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def post_events(agent_url, records):
    """POSTs records (a list, or a body already in JSON) to the agent's
    /v1/events, once: (status, text, headers)."""
    body = records if isinstance(records, str) else json.dumps(records)
    return request(agent_url + "/v1/events", "POST", body)


def scrape(base_url, failures=None):
    """{'name{labels}': value} of base_url/metrics. {} when it does not
    answer 200; with failures, that is also recorded as a failure."""
    try:
        status, text, _ = request(base_url + "/metrics")
    except OSError as e:
        status, text = f"nothing ({e})", ""
    if failures is not None:
        failures.check(status == 200, f"GET {base_url}/metrics answered {status}")
    samples = {}
    if status == 200:
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
    return samples


class Agent:
    """One agent's intake, over a keep-alive HTTP connection."""

    def __init__(self, url, region):
        self.url, self.region = url, region
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        assert self.host == "127.0.0.1", f"refusing a non-loopback agent URL {url}"
        self.conn = None

    def post(self, body):
        """POST /v1/events; returns (status, parsed JSON or raw text).

        Retries a request that got no answer (connection dropped) and a 503
        (spool full), boundedly; both are safe: a record is identified by its
        eventID and stored once."""
        if isinstance(body, str):
            body = body.encode()
        last_error = None
        for attempt in range(20):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
            except (OSError, http.client.HTTPException) as e:
                last_error = e
                self.close()
                time.sleep(min(0.1 * (attempt + 1), 1.0))
                continue
            if resp.status == 503:
                retry = resp.getheader("Retry-After") or "1"
                last_error = f"503 {raw[:200]!r}"
                time.sleep(min(float(retry) if retry.isdigit() else 1.0, 2.0))
                continue
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        raise RuntimeError(f"POST {self.url}/v1/events: no answer after retries: {last_error}")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# --- processes the test starts itself ------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout, what):
    """Waits until 127.0.0.1:port accepts a TCP connection (no request is
    sent: moto counts requests before it turns authentication on). Raises
    if proc exits first or timeout s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


class Process:
    """A process of ours: started in its own session with its output
    appended to log_path, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name, args, env, log_path):
        self.name, self.args, self.env, self.log_path = name, args, env, log_path
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log(f"{self.name} started (pid {self.proc.pid})")
        return self

    def stop(self, timeout=10):
        """Does nothing when not started or already ended."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        log(f"{self.name} stopped (pid {proc.pid})")


# --- the AWS CLI -----------------------------------------------------------------

def aws_env(key_id, secret, region="us-east-1", **extra):
    """The environment of an AWS CLI call (or of an aggregator talking to
    S3): only our AWS_* settings, no config or credentials file of the
    machine, no instance metadata; extra adds variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION=region,
               AWS_REGION=region, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               AWS_EC2_METADATA_DISABLED="true", **extra)
    return env
