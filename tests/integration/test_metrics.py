"""Prometheus metrics ([metrics] listen + path, served by the master), against CONTRACT.md
"Metrics": exact sums over every worker's shared-memory slot, counters that never go backward
(reload, failed reload, a worker killed, binary upgrade), the HTTP endpoints (/metrics, /healthz,
/readyz, 404, GET/HEAD only), rate-limit and auth failure counters, upstream gauges, the TLS
certificate expiry gauge, config errors, and bounded label cardinality.

Every scrape is parsed with prometheus_client's parser (python3-prometheus-client); a scrape that
does not parse, a family without its TYPE line, a sample with other label names than the contract
says, a duplicated series or an inconsistent histogram fails the test (`Scrape`).

Route labels (the contract's rule): the route's `name` if it has one, else host + path as matched:
prefix "/api" or "/api/" -> "/api/", path_exact "/x" -> "=/x", "/" -> "/", with the host in front
("h.test/hp/"); requests matching no route have route="" upstream="".

Measurements are printed as "report:" lines.
"""

import collections
import os
import re
import signal
import subprocess
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import Conn, assert_error, wait_until
from test_auth import AUDIENCE, ISSUER, OTHER_SECRET, SECRET, _bearer, _claims, _hs
from test_balancing import HC_FAST
from test_tls import (make_ca, make_cert, make_expired_cert, replace_pair, status_entry,
                      tls_section)
from test_zero_downtime import _install, _installed_binary, _stop_current_master

# family (as the parser names it: counters without _total) -> (TYPE, label names of its samples)
FAMILIES = {
    "proxyd_requests": ("counter", {"route", "upstream", "status"}),
    "proxyd_request_duration_seconds": ("histogram", {"route"}),
    "proxyd_upstream_requests": ("counter", {"upstream", "server", "status"}),
    "proxyd_upstream_response_duration_seconds": ("histogram", {"upstream", "server"}),
    "proxyd_rate_limited": ("counter", {"rate_limit"}),
    "proxyd_auth_failures": ("counter", {"route", "reason"}),
    "proxyd_connections_active": ("gauge", set()),
    "proxyd_connections": ("counter", set()),
    "proxyd_upstream_server_healthy": ("gauge", {"upstream", "server"}),
    "proxyd_upstream_server_active_connections": ("gauge", {"upstream", "server"}),
    "proxyd_workers": ("gauge", set()),
    "proxyd_worker_restarts": ("counter", set()),
    "proxyd_reloads": ("counter", {"result"}),
    "proxyd_config_generation": ("gauge", set()),
    "proxyd_build_info": ("gauge", {"version"}),
    "proxyd_tls_certificate_expiry_timestamp_seconds": ("gauge", {"cert"}),
}
# the name in the exposition's "# TYPE" line
TYPE_NAME = {f: f + "_total" if typ == "counter" else f for f, (typ, _) in FAMILIES.items()}

REQ = "proxyd_requests_total"
DUR = "proxyd_request_duration_seconds"
UPREQ = "proxyd_upstream_requests_total"
UPDUR = "proxyd_upstream_response_duration_seconds"


# ----------------------------------------------------------------------------------------------
# scraping and checking one exposition

def _labels_key(labels):
    return tuple(sorted(labels.items()))


def _le(v):
    return float("inf") if v == "+Inf" else float(v)


class Scrape:
    """One parsed /metrics answer, validated on construction."""

    def __init__(self, text):
        self.text = text
        try:
            fams = list(text_string_to_metric_families(text))
        except Exception as e:
            raise AssertionError("the scrape does not parse as Prometheus text (%r):\n%s" % (
                e, text[:4000]))
        self.fams = fams
        self.types = {}
        self.samples = {}          # (sample name, labels key) -> value
        self.family_of = {}        # sample name -> family name
        problems = []
        for f in fams:
            if f.name in self.types:
                problems.append("family %s appears twice" % f.name)
            self.types[f.name] = f.type
            for s in f.samples:
                key = (s.name, _labels_key(s.labels))
                if key in self.samples:
                    problems.append("duplicate series %s%r" % key)
                self.samples[key] = s.value
                self.family_of[s.name] = f.name
        for name, typ in self.types.items():
            if name.startswith("proxyd_") and name not in FAMILIES:
                problems.append("unexpected family %s (type %s): a sample under a name no "
                                "TYPE line declared?" % (name, typ))
        for fam, (typ, label_names) in FAMILIES.items():
            n_type = len(re.findall(r"^# TYPE %s (\S+)$" % re.escape(TYPE_NAME[fam]), text, re.M))
            m = re.search(r"^# TYPE %s (\S+)$" % re.escape(TYPE_NAME[fam]), text, re.M)
            if n_type != 1 or m.group(1) != typ:
                problems.append("family %s: %d TYPE line(s), type %r, expected one %r" % (
                    TYPE_NAME[fam], n_type, m and m.group(1), typ))
                continue
            if fam in self.types and self.types[fam] != typ:
                problems.append("family %s parsed as %s, expected %s" % (fam, self.types[fam],
                                                                           typ))
            for s in next((f.samples for f in fams if f.name == fam), []):
                want = set(label_names)
                if typ == "histogram" and s.name.endswith("_bucket"):
                    want.add("le")
                if set(s.labels) != want:
                    problems.append("sample %s%r: label names %s, expected %s" % (
                        s.name, s.labels, sorted(s.labels), sorted(want)))
                if s.value < 0 or s.value != s.value:
                    problems.append("sample %s%r = %r" % (s.name, s.labels, s.value))
        problems += self._histogram_problems()
        if problems:
            raise AssertionError("invalid scrape:\n  %s\n--- scrape:\n%s" % (
                "\n  ".join(problems), text[:6000]))

    def _histogram_problems(self):
        out = []
        for fam, (typ, _) in FAMILIES.items():
            if typ != "histogram":
                continue
            buckets = collections.defaultdict(list)
            for (name, lk), v in self.samples.items():
                if name == fam + "_bucket":
                    d = dict(lk)
                    le = d.pop("le")
                    buckets[_labels_key(d)].append((_le(le), v))
            counts = {lk: v for (name, lk), v in self.samples.items() if name == fam + "_count"}
            sums = {lk for (name, lk), v in self.samples.items() if name == fam + "_sum"}
            if set(buckets) != set(counts) or set(counts) != sums:
                out.append("%s: series with buckets %r, _count %r, _sum %r differ" % (
                    fam, sorted(buckets), sorted(counts), sorted(sums)))
            for lk, bs in buckets.items():
                bs.sort()
                if not bs or bs[-1][0] != float("inf"):
                    out.append("%s%r: no +Inf bucket" % (fam, lk))
                    continue
                les = [le for le, _ in bs]
                if len(set(les)) != len(les):
                    out.append("%s%r: duplicate le values %r" % (fam, lk, les))
                vals = [v for _, v in bs]
                if any(b < a for a, b in zip(vals, vals[1:])):
                    out.append("%s%r: buckets not cumulative: %r" % (fam, lk, bs))
                if lk in counts and counts[lk] != bs[-1][1]:
                    out.append("%s%r: _count %r != +Inf bucket %r" % (fam, lk, counts[lk],
                                                                       bs[-1][1]))
        return out

    def value(self, name, **labels):
        """The sample with exactly these labels, or None."""
        return self.samples.get((name, _labels_key(labels)))

    def series(self, name, **labels):
        """[(labels dict, value)] of the samples named `name` whose labels include `labels`."""
        out = []
        for (n, lk), v in self.samples.items():
            d = dict(lk)
            if n == name and all(d.get(k) == x for k, x in labels.items()):
                out.append((d, v))
        return sorted(out, key=lambda x: sorted(x[0].items()))

    def total(self, name, **labels):
        return sum(v for _, v in self.series(name, **labels))

    def monotonic(self):
        """{(name, labels): value} of every counter and histogram sample."""
        return {k: v for k, v in self.samples.items()
                if FAMILIES.get(self.family_of.get(k[0]), ("",))[0] in ("counter", "histogram")}

    def excerpt(self, *names):
        lines = [l for l in self.text.splitlines()
                 if not l.startswith("#") and any(l.startswith(n) for n in names)
                 and ("_bucket{" not in l or 'le="+Inf"' in l)]
        return "\n".join(lines[:120])


def _mget(px, path, method="GET", timeout=5.0):
    with Conn(px.metrics_port, timeout=timeout) as c:
        return c.request(method, path)


def _metrics_path(px):
    return px.cfg["metrics"].get("path", "/metrics")


def _scrape(px):
    r = _mget(px, _metrics_path(px))
    assert r.status == 200, "GET %s: %r" % (_metrics_path(px), r)
    ct = r.header("Content-Type") or ""
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, (
        "GET %s: Content-Type %r, expected text/plain; version=0.0.4" % (_metrics_path(px), ct))
    return Scrape(r.body.decode("utf-8"))


def _log_tail(px, n=30):
    return "\n".join(px.output().splitlines()[-n:])


def _expect(px, checks, what, timeout=5.0, settle=0.4):
    """checks: [(description, fn(Scrape) -> value, wanted)]. Wait (bounded) until every check
    holds on one scrape, then once more `settle` seconds later (a counter that overshoots fails).
    Returns the last scrape."""
    last = {}

    def bad(sc):
        return [(d, fn(sc), want) for d, fn, want in checks if fn(sc) != want]

    def ok():
        sc = last["sc"] = _scrape(px)
        last["bad"] = bad(sc)
        return not last["bad"]

    try:
        wait_until(ok, timeout, 0.05)
        time.sleep(settle)
        ok()
        if last["bad"]:
            raise AssertionError("changed after settling")
    except AssertionError as e:
        raise AssertionError(
            "%s: %s\n  %s\n--- scrape excerpt:\n%s\n--- proxyd log tail:\n%s" % (
                what, e, "\n  ".join("%s: got %r, expected %r" % b for b in last.get("bad", [])),
                last["sc"].excerpt("proxyd_") if "sc" in last else "(no scrape)", _log_tail(px)))
    return last["sc"]


def _metrics_proxy(t, be, workers=2, routes=None, metrics=None, **cfg):
    return t.proxy_to(be, routes=routes, server=dict({"workers": workers}, **cfg.pop("server", {})),
                      metrics=metrics or {}, **cfg)


# ----------------------------------------------------------------------------------------------
# client traffic with exact bookkeeping

class Traffic:
    """Sends requests and counts what the client got, by (route, upstream, status)."""

    def __init__(self, px):
        self.px = px
        self.by = collections.Counter()
        self.upstream = collections.Counter()  # status -> responses that came from the backend
        self.conns = 0
        self.owners = collections.Counter()   # worker pid -> connections it accepted
        self.pids = []

    def watch_workers(self):
        self.pids = self.px.worker_pids()

    def conn(self, reqs):
        """One new connection, the requests [(path, host, route, upstream, status, headers)] on
        it (keep-alive); returns the responses."""
        out = []
        with Conn(self.px.port, timeout=10) as c:
            self.conns += 1
            for i, (path, host, route, upstream, status, headers) in enumerate(reqs):
                r = c.request("GET", path, headers=headers, host=host)
                assert r.status == status, "GET %s (Host %s): expected %d, got %r" % (
                    path, host, status, r)
                self.by[(route, upstream, str(r.status))] += 1
                if r.has("X-Backend"):          # every backend response carries it
                    self.upstream[str(r.status)] += 1
                out.append(r)
                if i == 0 and self.pids:
                    self.owners[harness.socket_owner(self.px.port, c.sock.getsockname()[1],
                                              self.pids)] += 1
        return out

    def each(self, reqs, per_conn):
        """reqs split into connections of per_conn requests each."""
        for i in range(0, len(reqs), per_conn):
            self.conn(reqs[i:i + per_conn])

    @property
    def total(self):
        return sum(self.by.values())

    def count(self, route=None, status=None):
        return sum(n for (r, u, s), n in self.by.items()
                   if (route is None or r == route) and (status is None or s == str(status)))


def _req(path, route, status=200, host="test.local", upstream="b", headers=None):
    return (path, host, route, upstream if route != "" else "", status, headers)


# ----------------------------------------------------------------------------------------------
# monotonic counters, checked by a scraper thread and at every explicit scrape

class Monitor:
    """Every scrape fed here: no counter or histogram sample may be lower than before, nor
    vanish. A background thread scrapes every 30 ms while running."""

    def __init__(self, px):
        self.px = px
        self.lock = threading.Lock()
        self.prev = {}
        self.violations = []
        self.scrapes = 0
        self.conn_errors = []
        self._stop = threading.Event()
        self._thread = None

    def scrape(self):
        with self.lock:
            sc = _scrape(self.px)
            self._feed(sc)
            return sc

    def _feed(self, sc):
        self.scrapes += 1
        cur = sc.monotonic()
        for k, v in self.prev.items():
            if k not in cur:
                self.violations.append("%s%r vanished (was %r)" % (k[0], dict(k[1]), v))
            elif cur[k] < v:
                self.violations.append("%s%r went back from %r to %r" % (
                    k[0], dict(k[1]), v, cur[k]))
        merged = dict(self.prev)
        merged.update(cur)
        self.prev = merged

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.scrape()
            except (OSError, harness.Closed) as e:
                self.conn_errors.append(repr(e))   # reported; a connection error is not a
            except AssertionError as e:            # counter going back
                self.violations.append("scrape failed: %s" % str(e)[:3000])
            self._stop.wait(0.03)

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def check(self, what):
        assert not self.violations, "%s: counters went backward or vanished (%d scrapes):\n  %s" % (
            what, self.scrapes, "\n  ".join(self.violations[:30]))


# ----------------------------------------------------------------------------------------------
# 1. exact sums across 2 workers

ROUTES_1 = [
    {"path": "/api", "upstream": "b", "strip_prefix": True},            # "/api/"
    {"path_exact": "/x", "upstream": "b"},                              # "=/x"
    {"path": "/named/", "upstream": "b", "name": "named-route"},        # "named-route"
    {"host": "h.test", "path": "/hp", "upstream": "b"},                 # "h.test/hp/"
    {"path": "/v2/", "upstream": "b"},                                  # "/v2/"
]


def _mix_1(n, start=0):
    out = []
    for i in range(start, start + n):
        k = i % 8
        if k in (0, 7):
            out.append(_req("/api/echo?i=%d" % i, "/api/"))
        elif k == 1:
            # 500, not 502-504: those feed passive health, and with 4 client threads three of
            # them in a row would open the only server's circuit
            out.append(_req("/api/status/500", "/api/", 500))
        elif k == 2:
            out.append(_req("/x", "=/x"))
        elif k == 3:
            out.append(_req("/named/echo", "named-route"))
        elif k == 4:
            out.append(_req("/hp/echo", "h.test/hp/", host="h.test"))
        elif k == 5:
            out.append(_req("/v2/a", "/v2/"))
        else:   # no route: /nothing, /x/y (path_exact does not match), /hp without Host h.test
            out.append(_req(["/nothing/%d" % i, "/x/y", "/hp/echo"][i % 3], "", 404))
    return out


@harness.timeout(90)
def test_metrics_exact_sums_two_workers(t):
    be = t.backend()
    px = _metrics_proxy(t, be, workers=2, routes=ROUTES_1)
    st = px.status_json()
    assert len(st["workers"]) == 2, st
    sc0 = _scrape(px)
    conns0 = sc0.value("proxyd_connections_total")
    assert sc0.total(REQ) == 0 and sc0.total(UPREQ) == 0, sc0.excerpt(REQ, UPREQ)
    assert sc0.value("proxyd_workers") == 2, sc0.excerpt("proxyd_workers")

    tr = Traffic(px)
    tr.watch_workers()
    N = 400
    reqs = _mix_1(N)
    # alternate: 10 requests on 10 new connections, then 10 on one kept-alive connection
    for i in range(0, N, 20):
        tr.each(reqs[i:i + 10], 1)
        tr.conn(reqs[i + 10:i + 20])
    # and some concurrency: 4 threads x 10 connections x 5 requests
    extra = _mix_1(200, start=N)
    errors = []
    lock = threading.Lock()

    def worker(part):
        try:
            tr2 = Traffic(px)
            tr2.pids = tr.pids
            tr2.each(part, 5)
            with lock:
                tr.by.update(tr2.by)
                tr.upstream.update(tr2.upstream)
                tr.conns += tr2.conns
                tr.owners.update(tr2.owners)
        except Exception as e:
            errors.append(repr(e))
    ths = [threading.Thread(target=worker, args=(extra[k * 50:(k + 1) * 50],), daemon=True)
           for k in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    assert not errors, errors
    N += len(extra)
    assert tr.total == N, (tr.total, N)

    print("report: %d requests on %d connections; connections per worker pid: %s" % (
        N, tr.conns, dict(tr.owners)))
    assert len([p for p in tr.owners if p is not None]) == 2, (
        "both workers should have accepted connections: %r" % dict(tr.owners))

    proxied = sum(tr.upstream.values())
    by_status_up = tr.upstream
    checks = [("sum of %s" % REQ, lambda sc: sc.total(REQ), N),
              ("sum of %s_count" % DUR, lambda sc: sc.total(DUR + "_count"), N),
              ("sum of %s_bucket{le=+Inf}" % DUR,
               lambda sc: sc.total(DUR + "_bucket", le="+Inf"), N),
              ("sum of %s" % UPREQ, lambda sc: sc.total(UPREQ), proxied),
              ("sum of %s_count" % UPDUR, lambda sc: sc.total(UPDUR + "_count"), proxied),
              ("series of %s" % REQ,
               lambda sc: {(d["route"], d["upstream"], d["status"]): v
                           for d, v in sc.series(REQ)},
               {k: float(v) for k, v in tr.by.items()})]
    for route in sorted({r for r, _, _ in tr.by}):
        checks.append(("%s_count{route=%r}" % (DUR, route),
                       lambda sc, route=route: sc.value(DUR + "_count", route=route),
                       tr.count(route=route)))
    for status, n in sorted(by_status_up.items()):
        checks.append(("%s{upstream=b,server=%s,status=%s}" % (UPREQ, be.address, status),
                       lambda sc, status=status: sc.value(UPREQ, upstream="b", server=be.address,
                                                          status=status), n))
    checks.append(("%s_count{upstream=b,server=%s}" % (UPDUR, be.address),
                   lambda sc: sc.value(UPDUR + "_count", upstream="b", server=be.address),
                   proxied))
    checks.append(("proxyd_connections_total - before",
                   lambda sc: sc.value("proxyd_connections_total") - conns0, tr.conns))
    checks.append(("proxyd_connections_active", lambda sc: sc.value("proxyd_connections_active"),
                   0))
    sc = _expect(px, checks, "after %d requests over 2 workers" % N)
    print("report: %s" % ", ".join("%s/%s/%s=%d" % (k + (int(v),))
                                   for k, v in sorted(tr.by.items())))
    # the breakdown, as sent: every route label of the contract's rule
    for route in ("/api/", "=/x", "named-route", "h.test/hp/", "/v2/", ""):
        assert tr.count(route=route) > 0, route
    assert tr.count(route="", status=404) == tr.count(route="")
    assert tr.count(route="/api/", status=500) > 0
    # backend-side cross-check: the backend saw exactly the proxied requests
    assert be.served == proxied, (be.served, proxied)
    # durations are plausible: the sum of request durations is > 0 and < N * 10 s
    s = sc.total(DUR + "_sum")
    assert 0 < s < N * 10, s


# ----------------------------------------------------------------------------------------------
# 2. counters never go backward: reload, failed reload, a worker killed

@harness.timeout(90)
def test_metrics_never_backward_reload_and_worker_kill(t):
    be = t.backend()
    px = _metrics_proxy(t, be, workers=2)   # route "/" -> b: label "/"
    mon = Monitor(px)
    sc = mon.scrape()
    ok0 = sc.value("proxyd_reloads_total", result="success")
    fail0 = sc.value("proxyd_reloads_total", result="failure")
    gen0 = sc.value("proxyd_config_generation")
    restarts0 = sc.value("proxyd_worker_restarts_total")
    assert None not in (ok0, fail0, gen0, restarts0), sc.excerpt("proxyd_reloads", "proxyd_config",
                                                                 "proxyd_worker")
    assert gen0 == px.status_json()["generation"], (gen0, px.status_json())
    mon.start()
    tr = Traffic(px)

    def send(n):
        # one in 10 is a backend 503 (spread out: consecutive 5xx answers would make passive
        # health checking take the only server out, and the proxy answer 503 itself)
        reqs = [_req("/status/503", "/", 503) if i % 10 == 9 else _req("/echo?n=%d" % i, "/")
                for i in range(n)]
        tr.each(reqs[:n // 2], 1)
        tr.each(reqs[n // 2:], 10)

    def exact(what, **more):
        checks = [("sum of %s" % REQ, lambda sc: sc.total(REQ), tr.total),
                  ("%s{route=/,status=200}" % REQ,
                   lambda sc: sc.value(REQ, route="/", upstream="b", status="200"),
                   tr.count(status=200)),
                  ("%s{route=/,status=503}" % REQ,
                   lambda sc: sc.value(REQ, route="/", upstream="b", status="503"),
                   tr.count(status=503)),
                  ("sum of %s_count" % DUR, lambda sc: sc.total(DUR + "_count"), tr.total),
                  ("sum of %s" % UPREQ, lambda sc: sc.total(UPREQ), sum(tr.upstream.values())),
                  ("%s{status=503}" % UPREQ,
                   lambda sc: sc.total(UPREQ, upstream="b", status="503"), tr.upstream["503"])]
        for name, (fn, want) in more.items():
            checks.append((name, fn, want))
        sc = _expect(px, checks, what)
        with mon.lock:
            mon._feed(sc)
        mon.check(what)
        return sc

    try:
        send(60)
        exact("first 60 requests")

        # a reload: success +1, generation +1
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 0, "reload: %d %s %s" % (r.returncode, r.stdout, r.stderr)
        assert px.status_json()["generation"] == gen0 + 1
        exact("after the reload", **{
            "reloads success": (lambda sc: sc.value("proxyd_reloads_total", result="success"),
                                ok0 + 1),
            "reloads failure": (lambda sc: sc.value("proxyd_reloads_total", result="failure"),
                                fail0),
            "generation": (lambda sc: sc.value("proxyd_config_generation"), gen0 + 1)})
        send(60)
        exact("120 requests, after the reload")

        # a worker killed with SIGKILL: replaced, restarts +1, nothing lost
        st = px.status_json()
        victim = [w["pid"] for w in st["workers"] if w.get("generation") == st["generation"]][0]
        os.kill(victim, signal.SIGKILL)

        def replaced():
            s = px.status_json()
            cur = [w for w in s["workers"] if w.get("generation") == s["generation"]
                   and w.get("state") == "active"]
            return (len(cur) == 2 and victim not in [w["pid"] for w in cur]
                    and not harness.pid_alive(victim))
        wait_until(replaced, 10, 0.05, "the killed worker %d was not replaced within 10s: %r" % (
            victim, px.status_json()))
        exact("after kill -9 of worker %d" % victim, **{
            "worker restarts": (lambda sc: sc.value("proxyd_worker_restarts_total"),
                                restarts0 + 1),
            "workers": (lambda sc: sc.value("proxyd_workers"), 2),
            "generation": (lambda sc: sc.value("proxyd_config_generation"), gen0 + 1)})
        send(60)
        exact("180 requests, after the worker was replaced")

        # a failed reload: failure +1, generation and success unchanged, still serving
        good = open(px.config_path).read()
        with open(px.config_path, "w") as f:
            f.write(good + "\n[server.bogus]\nx = 1\n")
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 1, "reload of an invalid config: %d %s %s" % (
            r.returncode, r.stdout, r.stderr)
        with open(px.config_path, "w") as f:
            f.write(good)
        send(20)
        exact("after a failed reload", **{
            "reloads success": (lambda sc: sc.value("proxyd_reloads_total", result="success"),
                                ok0 + 1),
            "reloads failure": (lambda sc: sc.value("proxyd_reloads_total", result="failure"),
                                fail0 + 1),
            "generation": (lambda sc: sc.value("proxyd_config_generation"), gen0 + 1),
            "worker restarts": (lambda sc: sc.value("proxyd_worker_restarts_total"),
                                restarts0 + 1)})
        assert tr.total == 200
    finally:
        mon.stop()
    print("report: %d scrapes, %d scrape connection errors, total %d requests" % (
        mon.scrapes, len(mon.conn_errors), tr.total))
    mon.check("over the whole test")
    assert not mon.conn_errors, "scrapes failed to connect: %r" % mon.conn_errors[:5]


# ----------------------------------------------------------------------------------------------
# 3. binary upgrade: counters handed over

@harness.timeout(120)
def test_metrics_survive_binary_upgrade(t):
    binpath = _installed_binary(t)
    be = t.backend()
    px = _metrics_proxy(t, be, workers=2, binary=binpath)
    try:
        mon = Monitor(px)
        tr = Traffic(px)
        reqs = [_req("/echo?u=%d" % i, "/") for i in range(50)]
        tr.each(reqs, 5)
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 0, r
        good = open(px.config_path).read()
        with open(px.config_path, "w") as f:
            f.write(good + "\nnot toml at all ===\n")
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 1, r
        with open(px.config_path, "w") as f:
            f.write(good)
        st = px.status_json()
        victim = [w["pid"] for w in st["workers"] if w.get("generation") == st["generation"]][0]
        os.kill(victim, signal.SIGKILL)

        def replaced():
            ws = [w for w in px.status_json()["workers"] if w.get("state") == "active"]
            return len(ws) == 2 and victim not in [w["pid"] for w in ws]
        wait_until(replaced, 10, 0.05, "the killed worker was not replaced")
        for i in range(10):     # spread out (see test_metrics_never_backward_...)
            tr.each([_req("/status/503", "/", 503), _req("/echo", "/"), _req("/echo", "/")], 3)
        before = _expect(px, [("sum of %s" % REQ, lambda sc: sc.total(REQ), 80),
                              ("restarts", lambda sc: sc.value("proxyd_worker_restarts_total"),
                               1)],
                         "before the upgrade")
        mon._feed(before)
        ok = before.value("proxyd_reloads_total", result="success")
        fail = before.value("proxyd_reloads_total", result="failure")
        gen = before.value("proxyd_config_generation")
        assert (ok, fail) == (1, 1), before.excerpt("proxyd_reloads")

        master0 = px.status_json()["master_pid"]
        mon.start()
        _install(binpath)
        r = px.proxyctl("upgrade", timeout=60)
        assert r.returncode == 0, "upgrade: %d %s %s" % (r.returncode, r.stdout, r.stderr)
        st = px.status_json()
        px.seen_pids.add(st["master_pid"])
        assert st["master_pid"] != master0, st
        wait_until(lambda: not harness.pid_alive(master0), 15, 0.05,
                   "the old master still runs 15s after the upgrade")
        after = _expect(px, [
            ("sum of %s" % REQ, lambda sc: sc.total(REQ), 80),
            ("reloads success", lambda sc: sc.value("proxyd_reloads_total", result="success"),
             ok),
            ("reloads failure", lambda sc: sc.value("proxyd_reloads_total", result="failure"),
             fail),
            ("worker restarts", lambda sc: sc.value("proxyd_worker_restarts_total"), 1),
            ("generation (status)", lambda sc: sc.value("proxyd_config_generation"),
             px.status_json()["generation"]),
            ("workers", lambda sc: sc.value("proxyd_workers"), 2)],
            "after the upgrade")
        assert after.value("proxyd_config_generation") >= gen
        tr.each([_req("/echo?v=%d" % i, "/") for i in range(40)], 4)
        tr.each([_req("/nowhere", "/") for i in range(10)], 1)
        final = _expect(px, [
            ("sum of %s" % REQ, lambda sc: sc.total(REQ), tr.total),
            ("%s{route=/,status=200}" % REQ,
             lambda sc: sc.value(REQ, route="/", upstream="b", status="200"),
             tr.count(status=200)),
            ("%s{route=/,status=503}" % REQ,
             lambda sc: sc.value(REQ, route="/", upstream="b", status="503"), 10),
            ("sum of %s_count" % DUR, lambda sc: sc.total(DUR + "_count"), tr.total),
            ("sum of %s" % UPREQ, lambda sc: sc.total(UPREQ), sum(tr.upstream.values()))],
            "after the upgrade and %d more requests" % (tr.total - 80))
        mon.stop()
        mon._feed(final)
        print("report: upgrade: %d scrapes during it, %d connection errors; total %d; "
              "reloads success %d failure %d carried over" % (
                  mon.scrapes, len(mon.conn_errors), tr.total, ok, fail))
        mon.check("across the binary upgrade")
    finally:
        _stop_current_master(px)


# ----------------------------------------------------------------------------------------------
# 4. the endpoints

def test_metrics_endpoints(t):
    be = t.backend()
    px = _metrics_proxy(t, be, workers=2, metrics={"path": "/custom/prom"})
    r = _mget(px, "/custom/prom")
    assert r.status == 200, r
    ct = r.header("Content-Type") or ""
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, ct
    sc = Scrape(r.body.decode())
    h = _mget(px, "/custom/prom", method="HEAD")
    assert h.status == 200 and (h.header("Content-Type") or "").startswith("text/plain"), h
    r = _mget(px, "/healthz")
    assert r.status == 200 and r.body.strip() == b"ok", r
    r = _mget(px, "/readyz")
    assert r.status == 200 and r.body.strip() == b"ready", r
    for p in ("/metrics", "/", "/custom/prom/x", "/custom", "/healthz/x", "/nope"):
        r = _mget(px, p)
        assert r.status == 404, "GET %s: %r" % (p, r)
    problems = []
    for m in ("POST", "PUT", "DELETE"):
        for p in ("/custom/prom", "/healthz"):
            r = _mget(px, p, method=m)
            if r.status != 405:
                problems.append("%s %s: %d %s %r" % (m, p, r.status, r.reason, r.body[:100]))
    # (asserted at the end, so that the checks below run either way)

    # build info: the version proxyd --version prints
    v = subprocess.run([harness.PROXYD, "--version"], capture_output=True, text=True,
                       timeout=10).stdout
    infos = sc.series("proxyd_build_info")
    assert len(infos) == 1 and infos[0][1] == 1 and infos[0][0]["version"] in v, (infos, v)

    # /readyz: 503 once the master is stopping (a slow request keeps it draining)
    slow = {}
    th = threading.Thread(target=lambda: slow.update(r=px.get("/slow/2500", timeout=15)),
                          daemon=True)
    th.start()
    wait_until(lambda: be.served >= 1, 5, 0.02, "the slow request never reached the backend")
    stopper = t.spawn([harness.PROXYCTL, "-s", px.control_socket, "stop"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = {}

    def not_ready():
        try:
            r = _mget(px, "/readyz", timeout=2)
        except OSError as e:
            seen["err"] = repr(e)
            return False
        seen["r"] = r
        return r.status == 503
    wait_until(not_ready, 2.0, 0.02, "/readyz while stopping: %r" % seen)
    print("report: /readyz while stopping: %d %r" % (seen["r"].status, seen["r"].body))
    th.join(15)
    assert slow.get("r") is not None and slow["r"].status == 200, slow
    stopper.wait(15)
    assert not problems, "only GET/HEAD: expected 405 for:\n  " + "\n  ".join(problems)


# ----------------------------------------------------------------------------------------------
# 5. rate limits and auth failures

def test_metrics_rate_limit_and_auth(t):
    be = t.backend()
    routes = [
        {"path": "/limited", "upstream": "b", "rate_limit": "tight"},
        {"path": "/admin", "upstream": "b", "auth_required": True, "roles": ["admin"],
         "name": "admin-area"},
        {"path": "/private/", "upstream": "b", "auth_required": True},
        {"path": "/", "upstream": "b"},
    ]
    jwt_cfg = {"algorithms": ["HS256"], "secret_file": t.write("jwt.secret", SECRET + "\n"),
               "issuer": ISSUER, "audience": AUDIENCE, "leeway": "5s", "roles_claim": "roles"}
    px = _metrics_proxy(t, be, workers=2, routes=routes, auth={"jwt": jwt_cfg},
                        rate_limits={"tight": {"key": "ip", "requests_per_minute": 1,
                                               "burst": 3}})
    statuses = collections.Counter()
    for i in range(12):           # new connections: both workers, one shared bucket
        r = px.get("/limited/echo")
        if r.status == 429:
            assert_error(r, 429)
        statuses[r.status] += 1
    assert set(statuses) <= {200, 429} and statuses[200] == 3, statuses
    n429 = statuses[429]

    now = int(time.time())
    cases = [
        ("/private/echo", None, 401, "/private/", "missing", 5),
        ("/private/echo", _hs(secret=OTHER_SECRET), 401, "/private/", "signature", 4),
        ("/private/echo", _hs(_claims(exp=now - 3600, iat=now - 7200)), 401, "/private/",
         "expired", 3),
        ("/admin/echo", None, 401, "admin-area", "missing", 2),
        ("/admin/echo", _hs(), 403, "admin-area", "role", 6),
        ("/admin/echo", _hs(_claims(roles=["admin"])), 200, "admin-area", None, 2),
        ("/private/echo", _hs(), 200, "/private/", None, 3),
    ]
    want_fail = collections.Counter()
    want_req = collections.Counter()
    for path, token, status, route, reason, n in cases:
        for i in range(n):
            r = px.get(path, headers=_bearer(token) if token else None)
            if status == 200:
                assert r.status == 200, r
            else:
                assert_error(r, status)
        if reason:
            want_fail[(route, reason)] += n
        want_req[(route, str(status))] += n
    checks = [
        ("%s{rate_limit=tight}" % "proxyd_rate_limited_total",
         lambda sc: sc.value("proxyd_rate_limited_total", rate_limit="tight"), n429),
        ("proxyd_rate_limited_total series",
         lambda sc: len(sc.series("proxyd_rate_limited_total")), 1),
        ("%s{route=/limited/,status=429}" % REQ,
         lambda sc: sc.value(REQ, route="/limited/", upstream="b", status="429"), n429),
        ("%s{route=/limited/,status=200}" % REQ,
         lambda sc: sc.value(REQ, route="/limited/", upstream="b", status="200"), 3),
        ("proxyd_auth_failures_total series",
         lambda sc: {(d["route"], d["reason"]): v
                     for d, v in sc.series("proxyd_auth_failures_total")},
         {k: float(v) for k, v in want_fail.items()}),
    ]
    for (route, status), n in want_req.items():
        checks.append(("%s{route=%s,status=%s}" % (REQ, route, status),
                       lambda sc, route=route, status=status:
                       sc.value(REQ, route=route, upstream="b", status=status), n))
    sc = _expect(px, checks, "rate limit and auth counters")
    print("report: %d x 429 (rate_limited_total %d); auth failures %s" % (
        n429, sc.value("proxyd_rate_limited_total", rate_limit="tight"),
        {"%s/%s" % k: v for k, v in sorted(want_fail.items())}))


# ----------------------------------------------------------------------------------------------
# 6. upstream gauges

@harness.timeout(60)
def test_metrics_upstream_gauges(t):
    be = t.backend("live")
    dead = t.refusing_address()
    routes = [{"path": "/dead", "upstream": "dead"}, {"path": "/", "upstream": "b"}]
    px = t.proxy_to(routes=routes, server={"workers": 2}, metrics={}, upstreams={
        "b": {"servers": [{"address": be.address, "id": "live-1"}, {"address": dead}],
              "health_check": HC_FAST},
        "dead": {"servers": [{"address": t.refusing_address()}]}})

    def healthy(sc, server):
        return sc.value("proxyd_upstream_server_healthy", upstream="b", server=server)
    sc = _expect(px, [("healthy live-1", lambda sc: healthy(sc, "live-1"), 1),
                      ("healthy %s" % dead, lambda sc: healthy(sc, dead), 0),
                      ("workers", lambda sc: sc.value("proxyd_workers"), 2)],
                 "health gauges", timeout=5)
    gauges = sc.series("proxyd_upstream_server_healthy")
    assert len(gauges) == 3, gauges     # b: live-1 and the refusing one; dead: one server

    # active connections: one slow request in flight to live-1
    res = {}
    th = threading.Thread(target=lambda: res.update(r=px.get("/slow/1500", timeout=10)),
                          daemon=True)
    th.start()
    _expect(px, [("active live-1", lambda sc: sc.value(
        "proxyd_upstream_server_active_connections", upstream="b", server="live-1"), 1)],
        "a request in flight", timeout=1.2, settle=0.1)
    th.join(10)
    assert res["r"].status == 200, res
    _expect(px, [("active live-1", lambda sc: sc.value(
        "proxyd_upstream_server_active_connections", upstream="b", server="live-1"), 0)],
        "after the request", timeout=2)

    # an upstream that never answers: 502s counted as requests, never as upstream responses
    for _ in range(3):
        assert_error(px.get("/dead/x"), 502)
    sc = _expect(px, [("%s{route=/dead/,status=502}" % REQ, lambda sc: sc.value(
        REQ, route="/dead/", upstream="dead", status="502"), 3),
        ("%s{upstream=dead}" % UPREQ, lambda sc: sc.series(UPREQ, upstream="dead"), []),
        ("%s{upstream=dead}" % UPDUR, lambda sc: sc.series(UPDUR + "_count", upstream="dead"),
         [])], "an upstream that refuses")

    # the live server goes down, then comes back on its port
    port = be.port
    be.stop()
    t0 = time.monotonic()
    _expect(px, [("healthy live-1", lambda sc: healthy(sc, "live-1"), 0)],
            "after the live server stopped", timeout=5)
    down = time.monotonic() - t0
    back = t.backend("back", port=port)
    t0 = time.monotonic()
    _expect(px, [("healthy live-1", lambda sc: healthy(sc, "live-1"), 1)],
            "after the server came back", timeout=5)
    print("report: healthy gauge 1->0 in %.2fs, 0->1 in %.2fs" % (down,
                                                                  time.monotonic() - t0))
    assert back.address == be.address


# ----------------------------------------------------------------------------------------------
# 7. TLS certificate expiry

def _openssl_enddate(path):
    import datetime
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-enddate"],
                         capture_output=True, text=True, timeout=10).stdout.strip()
    text = out.split("=", 1)[1]
    dt = datetime.datetime.strptime(text.replace("  ", " "), "%b %d %H:%M:%S %Y GMT")
    return int(dt.replace(tzinfo=datetime.timezone.utc).timestamp())


def test_metrics_tls_certificate_expiry(t):
    ca = make_ca(t)
    c1 = make_cert(t, ca, "site-a", ["a.test"], days=30)
    c2 = make_cert(t, ca, "site-b", ["b.test"], key_type="ECDSA", days=45)
    px = _metrics_proxy(t, t.backend(), workers=1, tls=tls_section([c1, c2]))
    sc = _scrape(px)
    got = {d["cert"]: v for d, v in sc.series("proxyd_tls_certificate_expiry_timestamp_seconds")}
    want = {c1.cert: c1.not_after, c2.cert: c2.not_after}
    assert want[c1.cert] == _openssl_enddate(c1.cert) and want[c2.cert] == _openssl_enddate(
        c2.cert)
    assert got == want, "expiry gauges %r, expected %r\n%s" % (
        got, want, sc.excerpt("proxyd_tls"))
    print("report: %s" % got)


def test_metrics_tls_certificate_expiry_follows_renewal(t):
    """The expiry gauge of a renewed certificate (watch = true, atomic rename of a new pair with a
    later notAfter) changes to the new certificate's notAfter; the other certificate's gauge does
    not move; an expired replacement, which is refused, leaves the gauge where it was."""
    ca = make_ca(t)
    live_cert, live_key = t.path("certs/live-a.crt"), t.path("certs/live-a.key")
    old = make_cert(t, ca, "site-a", ["a.test"], days=30, cert_path=live_cert, key_path=live_key)
    other = make_cert(t, ca, "site-b", ["b.test"], key_type="ECDSA", days=45)
    new = make_cert(t, ca, "site-a-new", ["a.test"], days=90)
    exp = make_expired_cert(t, ca, "site-a-expired", ["a.test"])
    px = _metrics_proxy(t, t.backend(), workers=1, tls=tls_section([old, other], watch=True))
    name = "proxyd_tls_certificate_expiry_timestamp_seconds"

    def gauges():
        return {d["cert"]: v for d, v in _scrape(px).series(name)}

    got = gauges()
    assert got == {live_cert: old.not_after, other.cert: other.not_after}, got
    replace_pair(new.cert, new.key, live_cert, live_key)
    assert new.not_after == _openssl_enddate(live_cert) and new.not_after > old.not_after
    try:
        got = wait_until(lambda: (lambda g: g.get(live_cert) == new.not_after and g)(gauges()),
                         3.0, 0.05)
    except AssertionError:
        raise AssertionError("3 s after the renewal the gauge is %r; the new certificate's "
                             "notAfter is %d (old %d)\n%s" % (
                                 gauges(), new.not_after, old.not_after, _log_tail(px)))
    assert got == {live_cert: new.not_after, other.cert: other.not_after}, got
    print("report: expiry gauge for %s: %d -> %d after the renewal" % (
        os.path.basename(live_cert), old.not_after, new.not_after))

    replace_pair(exp.cert, exp.key, live_cert, live_key)
    wait_until(lambda: "expired" in status_entry(px, live_cert).get("error", ""), 3.0, 0.1,
               "the expired replacement was not refused (status: %r)" % (
                   status_entry(px, live_cert),))
    got = gauges()
    assert got == {live_cert: new.not_after, other.cert: other.not_after}, (
        "after a refused (expired, notAfter %d) replacement the gauges are %r" % (
            exp.not_after, got))


# ----------------------------------------------------------------------------------------------
# 8. config errors

BASE_CFG = """[server]
listen = ["127.0.0.1:1"]

[upstreams.b]
servers = [{ address = "127.0.0.1:2" }]

[[routes]]
path = "/"
upstream = "b"

"""
BASE_LINES = BASE_CFG.count("\n")


def _config_errors(t, metrics_text, name):
    r, path = t.check_config(BASE_CFG + metrics_text, name=name)
    out = r.stdout + r.stderr
    errs = [(int(m.group(1)), int(m.group(2)), m.group(3))
            for m in re.finditer(r"^%s:(\d+):(\d+): (.*)$" % re.escape(path), out, re.M)]
    return r, errs, out


def test_metrics_config_errors(t):
    r, errs, out = _config_errors(t, '[metrics]\nlisten = "127.0.0.1:9999"\npath = "/m"\n',
                                  "ok.toml")
    assert r.returncode == 0 and not errs, out
    r, errs, out = _config_errors(t, '[metrics]\nlisten = "127.0.0.1:9999"\n', "ok2.toml")
    assert r.returncode == 0 and not errs, out

    cases = [
        ("no-listen", '[metrics]\npath = "/metrics"\n', None, "listen"),
        ("healthz", '[metrics]\nlisten = "127.0.0.1:9999"\npath = "/healthz"\n', 3, "/healthz"),
        ("readyz", '[metrics]\nlisten = "127.0.0.1:9999"\npath = "/readyz"\n', 3, "/readyz"),
        ("no-slash", '[metrics]\nlisten = "127.0.0.1:9999"\npath = "metrics"\n', 3, "/"),
        ("unknown", '[metrics]\nlisten = "127.0.0.1:9999"\nlisen = "x"\n', 3, "lisen"),
        ("bad-listen", '[metrics]\nlisten = "nowhere"\n', 2, "nowhere"),
    ]
    problems = []
    for name, text, rel_line, word in cases:
        r, errs, out = _config_errors(t, text, name + ".toml")
        print("%s: exit %d: %s" % (name, r.returncode, out.strip()))
        if r.returncode != 1 or not errs:
            problems.append("%s: exit %d, no FILE:LINE:COL error:\n%s" % (name, r.returncode, out))
            continue
        if not any(word.lower() in msg.lower() for _, _, msg in errs):
            problems.append("%s: no error mentions %r: %r" % (name, word, errs))
        if rel_line is not None and not any(l == BASE_LINES + rel_line for l, _, _ in errs):
            problems.append("%s: no error on line %d: %r" % (name, BASE_LINES + rel_line, errs))
        if any(l < 1 or c < 1 for l, c, _ in errs):
            problems.append("%s: error location not 1-based: %r" % (name, errs))
    # the unknown key suggests "listen"
    r, errs, out = _config_errors(t, cases[4][1], "unknown2.toml")
    if not any("listen" in msg for _, _, msg in errs):
        problems.append("unknown key: no did-you-mean \"listen\": %r" % errs)
    # several errors at once: all reported
    r, errs, out = _config_errors(t, '[metrics]\npath = "/healthz"\nfoo = 1\n', "many.toml")
    if r.returncode != 1 or len(errs) < 3:
        problems.append("three errors (no listen, path /healthz, unknown foo): got %r" % errs)
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# 9. label cardinality

def test_metrics_label_cardinality_bounded(t):
    be = t.backend()
    px = _metrics_proxy(t, be, workers=2,
                        routes=[{"path": "/api", "upstream": "b"},
                                {"host": "h.test", "path": "/", "upstream": "b"}])
    tr = Traffic(px)
    reqs = [_req("/u%d/x?q=%d" % (i, i), "", 404, host="host%d.test" % (i % 7))
            for i in range(200)]
    tr.each(reqs, 10)
    reqs = [_req("/api/p%d?z=%d" % (i, i), "/api/") for i in range(50)]
    reqs += [_req("/any/%d" % i, "h.test/", host="h.test:%d" % (8000 + i)) for i in range(50)]
    tr.each(reqs, 10)
    sc = _expect(px, [
        ("%s series" % REQ, lambda sc: {(d["route"], d["upstream"], d["status"]): v
                                        for d, v in sc.series(REQ)},
         {("", "", "404"): 200.0, ("/api/", "b", "200"): 50.0, ("h.test/", "b", "200"): 50.0}),
        ("%s_count series" % DUR, lambda sc: {d["route"]: v
                                              for d, v in sc.series(DUR + "_count")},
         {"": 200.0, "/api/": 50.0, "h.test/": 50.0}),
    ], "300 requests on 250 different paths and 57 Host values")
    n = len([l for l in sc.text.splitlines() if l and not l.startswith("#")])
    print("report: %d sample lines in the scrape after 300 requests on distinct paths" % n)
    assert n < 200, "the scrape grew to %d sample lines" % n
