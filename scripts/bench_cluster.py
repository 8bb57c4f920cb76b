#!/usr/bin/env python3
"""Several facestream nodes on one PostgreSQL gallery (BENCHMARKS.md section 9).

Starts a throw-away PostgreSQL (Debian's package: initdb + postgres in a temp folder, as
the `postgres` account when run as root) and `facestream serve` nodes on loopback, and
measures, each beside its single-machine baseline in the same run:

1. enrol on node A -> searchable on node B: from A's 201 answer to B's index holding the
   template (B's /metrics `facestream_gallery_templates`, polled every 2 ms), p50/p99 over
   --enrolments faces. Baseline: two `serve` processes on one SQLite file (the
   single-machine way to share a gallery: the other process sees a change by polling
   SQLite's data_version every second).
2. node start-up with --templates synthetic templates (random unit vectors, 10 per
   identity) loaded from PostgreSQL and from SQLite: the `seconds` of the "gallery index
   built" log line (read the store, build the index) and the time to the API answering.
3. camera failover: two nodes with `cluster.camera_leases`, one simulated RTSP camera;
   SIGKILL the node watching it, time until the other node reports it `live` (polled
   every 20 ms), --failovers times, the victim restarted between runs. Baseline: one node
   killed and started again at once (what a supervisor restarting a lone node gives).
   Then the same with the holder frozen (SIGSTOP, resumed after the takeover): the bound
   README promises is lease_timeout_ms plus a round plus the camera's connection.
4. a silent partition from PostgreSQL (nftables drops its port on loopback; needs root
   and `nft`): how long GET /v1/ready, GET /v1/identities and POST /v1/identities take to
   answer 503, three times each, the network healed in between.

Prints the CPU flags (AVX-512 machines run inference faster, start-up included).

Usage: scripts/bench_cluster.py [--enrolments 100] [--templates 100000] [--failovers 5]
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

BIN = os.environ.get("FACESTREAM_BIN", "target/release/facestream")
FIXTURES = os.environ.get("FACESTREAM_FIXTURES", ".cache/fixtures")
MODELS = os.environ.get("FACESTREAM_MODELS_DIR", ".cache/models")
KEY = "bench-admin-key-0123456789"
MODEL = "sface@2021dec"


def machine():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    simd = [f for f in ("avx512f", "avx2") if f in flags]
    return f"{os.cpu_count()} cores, flags: {','.join(simd) or 'none'}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Postgres:
    def __init__(self, root):
        self.root = os.path.join(root, "pg")
        os.makedirs(self.root)
        self.user = None
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            self.user = (pw.pw_uid, pw.pw_gid)
            os.chown(self.root, *self.user)
        versions = sorted(v for v in os.listdir("/usr/lib/postgresql")
                          if os.path.exists(f"/usr/lib/postgresql/{v}/bin/postgres"))
        self.bin = f"/usr/lib/postgresql/{versions[-1]}/bin"
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.run(["initdb", "-U", "facestream", "--auth=trust", "-E", "UTF8", "--locale=C",
                  "-D", self.data], check=True, stdout=subprocess.DEVNULL)
        log = open(os.path.join(self.root, "server.log"), "w")
        # the database's own settings left as shipped (fsync on): the start-up figures
        # read what a real server holds
        self.proc = subprocess.Popen(
            [f"{self.bin}/postgres", "-D", self.data, "-p", str(self.port), "-c",
             "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
            stdout=subprocess.DEVNULL, stderr=log, **self.as_user())
        for _ in range(600):
            if self.psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise SystemExit("postgres did not start")

    def as_user(self):
        return {"user": self.user[0], "group": self.user[1]} if self.user else {}

    def run(self, args, **kw):
        return subprocess.run([f"{self.bin}/{args[0]}", *args[1:]], **self.as_user(), **kw)

    def psql(self, sql, check=True, stdin=None):
        return subprocess.run(
            [f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "facestream",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=check, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self):
        return f"postgresql://facestream@127.0.0.1:{self.port}/postgres"

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()


class Node:
    def __init__(self, root, name, gallery, extra=""):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "config.toml")
        with open(self.config, "w") as f:
            f.write(f"""{gallery}
[api]
listen = "127.0.0.1:0"
generated_key_file = "{self.dir}/unused.key"
keys = [{{ name = "bench", key = "{KEY}", scope = "admin" }}]
[demo]
mode = "off"
[events]
outbox = "{self.dir}/outbox.db"
{extra}""")
        self.start()

    def start(self):
        self.log = os.path.join(self.dir, f"serve-{time.time_ns()}.log")
        env = dict(os.environ, FACESTREAM_MODELS_DIR=MODELS)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([BIN, "--log", "info", "--log-format", "json", "--config",
                                      self.config, "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        self.port = None
        deadline = time.monotonic() + 600
        while self.port is None:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited: {open(self.log).read()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("serve did not start")
            for line in open(self.log):
                if "API listening on http://" in line:
                    addr = line.split("API listening on http://")[1].split("/")[0]
                    self.port = int(addr.rsplit(":", 1)[1])
            time.sleep(0.01)
        self.ready_s = time.monotonic() - self.started

    def logged(self, message):
        for line in open(self.log):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == message:
                return entry
        return None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def call(self, method, path, body=None, ctype=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                     method=method)
        req.add_header("Authorization", f"Bearer {KEY}")
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()

    def templates(self):
        _, text = self.call("GET", "/metrics")
        for line in text.decode().splitlines():
            if line.startswith("facestream_gallery_templates "):
                return int(float(line.split()[1]))
        raise SystemExit("no facestream_gallery_templates in /metrics")

    def cameras(self):
        _, body = self.call("GET", "/v1/cameras")
        return json.loads(body)["cameras"]


def propagation(a, b, photo, n):
    """Enrol `n` faces on a; seconds from a's answer to b's index holding each."""
    out = []
    base = b.templates()
    for i in range(n):
        _, body = a.call("POST", "/v1/identities", json.dumps({"name": f"p{i}"}).encode(),
                         "application/json")
        ident = json.loads(body)["id"]
        a.call("POST", f"/v1/identities/{ident}/faces?face=largest", photo, "image/jpeg")
        acked = time.monotonic()
        while b.templates() < base + i + 1:
            if time.monotonic() - acked > 30:
                raise SystemExit("an enrolment never reached the other node")
            time.sleep(0.002)
        out.append(time.monotonic() - acked)
    return out


def unit_vector(rng):
    v = [rng.gauss(0, 1) for _ in range(128)]
    norm = sum(x * x for x in v) ** 0.5
    return struct.pack("<128f", *(x / norm for x in v))


def synthetic_rows(count, per_identity=10, seed=7):
    rng = random.Random(seed)
    now = "2026-11-29T00:00:00+00:00"
    for i in range(count // per_identity):
        ident = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        yield ("identity", ident, f"synthetic {i}", now)
        for _ in range(per_identity):
            tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            yield ("template", tid, ident, unit_vector(rng), now)


def fill_sqlite(path, count):
    db = sqlite3.connect(path)
    db.executescript("""
CREATE TABLE IF NOT EXISTS identities (id TEXT PRIMARY KEY, name TEXT NOT NULL,
  metadata TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS templates (id TEXT PRIMARY KEY, identity_id TEXT NOT NULL
  REFERENCES identities(id) ON DELETE CASCADE, model TEXT NOT NULL, embedding BLOB NOT NULL,
  quality REAL NOT NULL, source TEXT NOT NULL, created TEXT NOT NULL, crop BLOB);
CREATE INDEX IF NOT EXISTS templates_identity ON templates(identity_id);
CREATE INDEX IF NOT EXISTS templates_model ON templates(model);
""")
    for row in synthetic_rows(count):
        if row[0] == "identity":
            db.execute("INSERT INTO identities VALUES (?, ?, '{}', ?, ?)",
                       (row[1], row[2], row[3], row[3]))
        else:
            db.execute("INSERT INTO templates VALUES (?, ?, ?, ?, 0.8, 'synthetic', ?, NULL)",
                       (row[1], row[2], MODEL, row[3], row[4]))
    db.commit()
    db.close()


def fill_postgres(pg, root, count):
    ids = os.path.join(root, "identities.tsv")
    tpl = os.path.join(root, "templates.tsv")
    with open(ids, "w") as fi, open(tpl, "w") as ft:
        for row in synthetic_rows(count):
            if row[0] == "identity":
                fi.write(f"{row[1]}\t{row[2]}\t{{}}\t{row[3]}\t{row[3]}\n")
            else:
                ft.write(f"{row[1]}\t{row[2]}\t{MODEL}\t\\\\x{row[3].hex()}\t0.8\tsynthetic\t"
                         f"{row[4]}\n")
    with open(ids) as f:
        pg.psql("COPY identities (id, name, metadata, created, updated) FROM STDIN", stdin=f)
    with open(tpl) as f:
        pg.psql("COPY templates (id, identity_id, model, embedding, quality, source, created) "
                "FROM STDIN", stdin=f)
    pg.psql("ANALYZE")


def wait_live(node, camera, timeout=120):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            for c in node.cameras():
                if c["id"] == camera and c["state"] == "live":
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{camera} never live")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--enrolments", type=int, default=100)
    ap.add_argument("--templates", type=int, default=100_000)
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--only", default="propagation,startup,failover,partition")
    args = ap.parse_args()
    only = args.only.split(",")
    print(f"machine: {machine()}")
    root = tempfile.mkdtemp(prefix="facestream-bench-cluster-")
    os.chmod(root, 0o755)  # the postgres account reaches its folder inside
    photo = open(os.path.join(FIXTURES, "obama.jpg"), "rb").read()
    nodes = []
    pg = Postgres(root)
    try:
        if "propagation" in only:
            pgg = f'[gallery]\nstore = "postgres"\npostgres_url = "{pg.url()}"'
            a, b = Node(root, "pa", pgg), Node(root, "pb", pgg)
            nodes += [a, b]
            lite = f'[gallery]\ndatabase = "{root}/shared.db"'
            sa, sb = Node(root, "sa", lite), Node(root, "sb", lite)
            nodes += [sa, sb]
            for label, (x, y) in [("sqlite", (sa, sb)), ("postgres", (a, b))] * 2:
                lat = propagation(x, y, photo, args.enrolments // 2)
                print(f"propagation {label}: n={len(lat)} p50={1000 * pct(lat, 50):.1f} ms "
                      f"p99={1000 * pct(lat, 99):.1f} ms max={1000 * max(lat):.1f} ms")
            for n in nodes:
                n.stop()
            nodes.clear()
        if "startup" in only:
            pgdb = Postgres(os.path.join(root, "big"))
            # the migrations first: a node on the empty database creates the schema
            first = Node(root, "schema", f'[gallery]\nstore = "postgres"\n'
                                         f'postgres_url = "{pgdb.url()}"')
            first.stop()
            t = time.monotonic()
            fill_postgres(pgdb, root, args.templates)
            print(f"filled postgres with {args.templates} templates in "
                  f"{time.monotonic() - t:.0f} s")
            t = time.monotonic()
            fill_sqlite(os.path.join(root, "big.db"), args.templates)
            print(f"filled sqlite with {args.templates} templates in "
                  f"{time.monotonic() - t:.0f} s")
            stores = {
                "postgres": f'[gallery]\nstore = "postgres"\npostgres_url = "{pgdb.url()}"',
                "sqlite": f'[gallery]\ndatabase = "{root}/big.db"',
            }
            for label in ["sqlite", "postgres", "sqlite", "postgres", "sqlite", "postgres"]:
                n = Node(root, f"start-{label}", stores[label])
                built = n.logged("gallery index built")
                print(f"start-up {label}: templates={built['templates']} "
                      f"gallery load+index={built['seconds']:.2f} s "
                      f"API listening after {n.ready_s:.2f} s")
                n.stop()
            pgdb.stop()
        if "failover" in only:
            cam_port = free_port()
            sim = subprocess.Popen([BIN, "simulate-camera", os.path.join(FIXTURES, "obama.jpg"),
                                    "--port", str(cam_port), "--width", "960", "--height", "540",
                                    "--fps", "10"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            try:
                time.sleep(3)
                url = f"rtsp://127.0.0.1:{cam_port}/cam1"

                def leased(name):
                    return (f'[gallery]\nstore = "postgres"\npostgres_url = "{pg.url()}"',
                            f'[cluster]\nnode_id = "{name}"\ncamera_leases = true\n'
                            f'[[cameras]]\nid = "door"\nurl = "{url}"\n')

                # baseline: a lone node (no leases) killed and started again at once
                lone = Node(root, "lone", f'[gallery]\ndatabase = "{root}/lone.db"',
                            f'[[cameras]]\nid = "door"\nurl = "{url}"\n')
                nodes.append(lone)
                wait_live(lone, "door")
                restarts = []
                for _ in range(args.failovers):
                    lone.kill()
                    t = time.monotonic()
                    lone.start()
                    wait_live(lone, "door")
                    restarts.append(time.monotonic() - t)
                lone.stop()
                nodes.remove(lone)
                pair = {name: Node(root, f"lease-{name}", *leased(name)) for name in "xy"}
                nodes += pair.values()
                def holders():
                    return [name for name, node in pair.items()
                            if any(c["state"] == "live" for c in node.cameras())]

                def one_holder():
                    deadline = time.monotonic() + 120
                    while len(live := holders()) != 1:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"the camera is live on {live}, not on one node")
                        time.sleep(0.02)
                    return live[0]

                takeovers, frozen = [], []
                for _ in range(args.failovers):
                    holder = one_holder()
                    other = "y" if holder == "x" else "x"
                    pair[holder].kill()
                    t = time.monotonic()
                    wait_live(pair[other], "door")
                    takeovers.append(time.monotonic() - t)
                    pair[holder].start()
                # a frozen node (SIGSTOP: its sockets stay open, so PostgreSQL alone would
                # never end its session): the documented bound is lease_timeout_ms (10 s)
                # plus a round (1 s) plus the camera's connection
                for _ in range(args.failovers):
                    holder = one_holder()
                    other = "y" if holder == "x" else "x"
                    pair[holder].proc.send_signal(signal.SIGSTOP)
                    t = time.monotonic()
                    wait_live(pair[other], "door")
                    frozen.append(time.monotonic() - t)
                    pair[holder].proc.send_signal(signal.SIGCONT)
                    one_holder()  # the resumed node gives the camera up
                for label, v in [("lone node restarted", restarts),
                                 ("lease takeover", takeovers),
                                 ("frozen node's camera taken over", frozen)]:
                    print(f"failover {label}: n={len(v)} p50={pct(v, 50):.2f} s "
                          f"max={max(v):.2f} s ({', '.join(f'{x:.2f}' for x in v)})")
            finally:
                sim.send_signal(signal.SIGTERM)
                sim.wait()
        if "partition" in only:
            # a silent partition from PostgreSQL (its packets dropped on loopback: the
            # connections stay open and nothing answers): how long until a node says 503
            pgg = f'[gallery]\nstore = "postgres"\npostgres_url = "{pg.url()}"'
            a = Node(root, "cut", pgg)
            nodes.append(a)
            table = f"facestream_bench_{os.getpid()}"
            for path, body in [("/v1/ready", None), ("/v1/identities", None),
                               ("/v1/identities", b'{"name": "x"}')] * 3:
                a.call("GET", "/v1/ready")  # connections in use before the cut
                subprocess.run(["nft", "add", "table", "inet", table], check=True)
                subprocess.run(["nft", "add", "chain", "inet", table, "input",
                                "{ type filter hook input priority -10 ; }"], check=True)
                subprocess.run(["nft", "add", "rule", "inet", table, "input", "iif", "lo", "tcp",
                                "dport", str(pg.port), "drop"], check=True)
                t = time.monotonic()
                try:
                    status = a.call("POST" if body else "GET", path, body, "application/json")[0]
                except urllib.error.HTTPError as e:
                    status = e.code
                took = time.monotonic() - t
                subprocess.run(["nft", "delete", "table", "inet", table], check=True)
                print(f"partition: {'POST' if body else 'GET'} {path} answered {status} "
                      f"after {took:.2f} s")
                deadline = time.monotonic() + 120
                while True:  # healed: ready again before the next cut
                    try:
                        if a.call("GET", "/v1/ready")[0] == 200:
                            break
                    except (urllib.error.HTTPError, OSError):
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("never ready again after the partition")
                    time.sleep(0.2)
    finally:
        for n in nodes:
            n.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
