"""Admin REST API, the endpoints that change things at run time: POST /api/v1/backends/add,
PUT /api/v1/backends/update, DELETE /api/v1/backends/remove, POST /api/v1/backends/disconnect,
their durability through [server] state_file, and PUT /api/v1/config.

What a change must do is checked on the traffic, not only in the API's answers: which backend
answered (the X-Backend response header), which worker process accepted a client connection or
holds a connection to a backend (/proc/net/tcp + /proc/PID/fd), and the requests each backend
recorded. "Within 1 s" is measured from the moment the admin call answered."""

import copy
import json
import os
import socket
import threading
import time

import harness
from test_admin import _admin_proxy, _call

ADD = "/api/v1/backends/add"
UPDATE = "/api/v1/backends/update"
PROPAGATION = 1.0   # seconds a change may take to reach every worker (CONTRACT.md, the spec)


# ----------------------------------------------------------------------------------------------
# API helpers

def _servers(px, upstream="b"):
    """{id: server} as GET /api/v1/backends?upstream= shows them."""
    status, body, _ = _call(px, "GET", "/api/v1/backends?upstream=" + upstream)
    assert status == 200, (status, body)
    return {s["id"]: s for s in body["upstreams"][upstream]["servers"]}


def _config(px):
    status, body, _ = _call(px, "GET", "/api/v1/config")
    assert status == 200, (status, body)
    return body


def _config_servers(px, upstream="b"):
    """{id: server entry} of GET /api/v1/config (the effective config)."""
    return {s["id"]: s for s in _config(px)["config"]["upstreams"][upstream]["servers"]}


def _ok(px, method, path, body=None):
    """The call must answer 200; returns its JSON."""
    status, reply, _ = _call(px, method, path, body)
    assert status == 200, (method, path, body, status, reply)
    return reply


def _remove(px, backend_id, upstream="b"):
    return _call(px, "DELETE", "/api/v1/backends/remove?upstream=%s&backend_id=%s"
                 % (upstream, backend_id))


def _disconnect(px, backend_id, upstream="b"):
    return _call(px, "POST", "/api/v1/backends/disconnect?upstream=%s&backend_id=%s"
                 % (upstream, backend_id))


def _generation(px):
    """(generation in proxyctl status --json, generation in GET /api/v1/config)."""
    return px.status_json()["generation"], _config(px)["generation"]


# ----------------------------------------------------------------------------------------------
# which process holds which socket

def _tcp_rows():
    """[(local port, remote port, state hex, inode)] of /proc/net/tcp (everything is IPv4)."""
    rows = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            rows.append((int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16),
                         p[3], p[9]))
    return rows


def _socket_inodes(pids):
    """{socket inode: pid} of every socket the pids hold open."""
    out = {}
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                out[link[8:-1]] = pid
    return out


def _accepted_by(px, client_port, pids):
    """The worker pid (among pids) holding the accepted socket px.port <- client_port."""
    owners = _socket_inodes(pids)
    for lp, rp, _, inode in _tcp_rows():
        if lp == px.port and rp == client_port and inode in owners:
            return owners[inode]
    return None


def _upstream_conns(backend_port, pids):
    """{local port: pid} of the ESTABLISHED connections the pids hold to backend_port."""
    owners = _socket_inodes(pids)
    return {lp: owners[inode] for lp, rp, st, inode in _tcp_rows()
            if rp == backend_port and st == "01" and inode in owners}


def _hit(px, pids, path="/echo"):
    """One GET on a new client connection: (pid of the worker that accepted it, X-Backend of
    the answer, status). The owner is looked up while the connection is still open."""
    with harness.Conn(px.port, timeout=10) as c:
        r = c.request("GET", path)
        owner = _accepted_by(px, c.sock.getsockname()[1], pids)
    return owner, r.header("X-Backend"), r.status


def _slow_in_flight(px, be, others, ms):
    """GET /slow/MS in background threads until one is in flight at backend be (the backend
    records a request before it sleeps). Returns (thread, result dict, the record at be)."""
    for attempt in range(8):
        target = "/slow/%d?attempt=%d" % (ms, attempt)
        res = {}

        def run(target=target, res=res):
            try:
                r = px.get(target, timeout=ms / 1000.0 + 10)
                res.update(status=r.status, backend=r.header("X-Backend"), body=r.body)
            except Exception as e:   # noqa: BLE001 - reported by the caller's assert
                res["error"] = repr(e)
        th = threading.Thread(target=run, daemon=True)
        th.start()

        def landed(target=target):
            for b in [be] + list(others):
                for rec in list(b.requests):
                    if rec["target"] == target:
                        return b, rec
            return None
        where, rec = harness.wait_until(landed, timeout=5, msg="slow request %s" % target)
        if where is be:
            return th, res, rec
    raise AssertionError("no slow request reached %s in 8 tries" % be.name)


def _all_ok_until(px, deadline, path="/echo"):
    """Requests one after the other until monotonic deadline: every one must get 200 (a
    change must drop no request while it propagates). Returns how many were sent."""
    n = 0
    while time.monotonic() < deadline:
        r = px.get(path)
        assert r.status == 200, r
        n += 1
        time.sleep(0.01)
    return n


def _restart_same_config(px):
    """proxyctl stop, then a new proxyd on the very same config file (not rewritten)."""
    r = px.proxyctl("stop")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert px.wait_exit(15) is not None, "proxyd did not exit after proxyctl stop"
    with open(px.config_path) as f:
        text = f.read()
    px._build = lambda: None   # Proxy.start would write the config file again: keep it as is
    px.start()
    harness.wait_until(lambda: harness.port_accepts(px.admin_port), msg="admin port")
    with open(px.config_path) as f:
        assert f.read() == text
    return px


def _traffic_reaches(px, be, timeout=PROPAGATION):
    """Requests on new connections until backend be answers one, for at most timeout s."""
    n = be.served
    deadline = time.monotonic() + timeout
    while True:
        r = px.get("/echo")
        assert r.status == 200, r
        if be.served > n:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


# ----------------------------------------------------------------------------------------------
# add

@harness.timeout(60)
def test_backends_add_validation_and_result(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A)
    gen = _generation(px)
    pids = px.worker_pids()

    good = {"upstream": "b", "backend": {"address": B.address, "id": "bee", "weight": 2,
                                         "max_connections": 10}}
    status, body, _ = _call(px, "POST", ADD, good)
    assert status == 200, (status, body)
    assert body["upstream"] == "b", body
    added = body["backend"]
    assert added["id"] == "bee" and added["address"] == B.address and added["weight"] == 2, body
    servers = _servers(px)
    assert set(servers) == {A.address, "bee"}, servers
    for key in ("id", "address", "weight", "backup"):
        assert servers["bee"][key] == added[key], (key, servers["bee"], added)
    cfg_servers = _config_servers(px)
    assert cfg_servers["bee"]["address"] == B.address and cfg_servers["bee"]["weight"] == 2
    assert cfg_servers["bee"]["max_connections"] == 10, cfg_servers
    # the id defaults to the address text
    C = t.backend("C")
    status, body, _ = _call(px, "POST", ADD, {"upstream": "b", "backend": {"address": C.address}})
    assert status == 200 and body["backend"]["id"] == C.address, (status, body)
    assert body["backend"]["weight"] == 1, body

    # bad input: 400 with a reason, nothing added
    bad = [
        ([1, 2], None),
        ('"just a string"', None),
        ("{not json", None),
        ({"backend": {"address": "127.0.0.1:1"}}, None),                       # no upstream
        ({"upstream": 5, "backend": {"address": "127.0.0.1:1"}}, None),         # not a string
        ({"upstream": "b"}, None),                                              # no backend
        ({"upstream": "b", "backend": "127.0.0.1:1"}, None),                    # not an object
        ({"upstream": "b", "backend": {"id": "x1"}}, None),                     # no address
        ({"upstream": "b", "backend": {"address": "127.0.0.1:1", "wieght": 2}}, "wieght"),
        ({"upstream": "b", "backend": {"address": "127.0.0.1:1", "weight": 0}}, "weight"),
        ({"upstream": "b", "backend": {"address": "127.0.0.1:1", "weight": 1000001}}, "weight"),
        ({"upstream": "b", "backend": {"address": "127.0.0.1:1", "weight": "2"}}, "weight"),
        ({"upstream": "b", "backend": {"address": "127.0.0.1"}}, "port"),
        ({"upstream": "b", "backend": {"address": "127.0.0.1:99999"}}, "99999"),
        ({"upstream": "b", "backend": {"address": "127.0.0.1:1", "backup": "yes"}}, "backup"),
        ({"upstream": "b", "backend": {"address": B.address, "id": "bee"}}, "update"),  # dup id
        ({"upstream": "b", "backend": {"address": A.address}}, "update"),   # dup (id = address)
    ]
    for payload, word in bad:
        status, body, _ = _call(px, "POST", ADD, payload)
        assert status == 400, (payload, status, body)
        assert isinstance(body.get("error"), str) and body["error"], (payload, body)
        if word:
            assert word in body["error"], (payload, word, body)
    status, body, _ = _call(px, "POST", ADD, {"upstream": "nope",
                                              "backend": {"address": "127.0.0.1:1"}})
    assert status == 404 and "nope" in body["error"], (status, body)
    payload = {"upstream": "b", "backend": {"address": "127.0.0.1:1", "id": "sneaky"}}
    for token in (None, "Bearer wrong"):
        status, body, r = _call(px, "POST", ADD, payload, token=token)
        assert status == 401 and r.getheader("WWW-Authenticate", "").startswith("Bearer"), body
    status, body, _ = _call(px, "POST", ADD, json.dumps(payload), content_type="text/plain")
    assert status == 415, (status, body)

    assert set(_servers(px)) == {A.address, "bee", C.address}, "a refused add changed something"
    assert set(_config_servers(px)) == {A.address, "bee", C.address}
    assert _generation(px) == gen, "an add must not start a new worker generation"
    assert px.worker_pids() == pids
    # and the added servers are used
    assert _traffic_reaches(px, B) and _traffic_reaches(px, C)


@harness.timeout(60)
def test_backends_add_reaches_every_worker_within_1s(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A, server={"workers": 2}, upstream={"balance": "round_robin"})
    pids = px.worker_pids()
    assert len(pids) == 2, pids
    gen = _generation(px)
    for _ in range(10):
        assert px.get("/echo").status == 200
    assert B.served == 0

    status, body, _ = _call(px, "POST", ADD, {"upstream": "b", "backend": {"address": B.address}})
    answered = time.monotonic()
    assert status == 200, (status, body)

    # requests on new connections (SO_REUSEPORT spreads them over both workers) until both
    # workers have sent one to B, for at most 1 s after the answer
    via_b = set()
    accepted = set()
    sent = 0
    while time.monotonic() - answered < PROPAGATION and via_b != set(pids):
        owner, backend, st = _hit(px, pids)
        assert st == 200 and owner in pids, (owner, backend, st)
        sent += 1
        accepted.add(owner)
        if backend == "B":
            via_b.add(owner)
    assert via_b == set(pids), (
        "within 1 s of the add, B got requests from workers %r only (of %r; %d requests, "
        "workers that accepted some: %r)" % (sorted(via_b), pids, sent, sorted(accepted)))

    # from then on: its share from every worker (round robin over 2 servers: about half)
    per_worker = {pid: {"A": 0, "B": 0} for pid in pids}
    for _ in range(40):
        owner, backend, st = _hit(px, pids)
        assert st == 200 and owner in pids and backend in ("A", "B"), (owner, backend, st)
        per_worker[owner][backend] += 1
    for pid, got in per_worker.items():
        n = got["A"] + got["B"]
        assert n >= 4, "worker %d accepted only %d of 40 connections: %r" % (pid, n, per_worker)
        assert got["B"] >= n // 4 and got["A"] >= n // 4, (pid, per_worker)

    # backend side: B's requests came on connections held by both workers
    conns = _upstream_conns(B.port, pids)
    holders = {conns.get(rec["peer"][1]) for rec in B.requests if rec["peer"]}
    assert set(pids) <= holders, (holders, conns, pids)

    assert px.worker_pids() == pids, "the add replaced the workers"
    assert _generation(px) == gen, "the add started a new generation"


# ----------------------------------------------------------------------------------------------
# update

@harness.timeout(60)
def test_backends_update(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A, B, upstream={"balance": "weighted_round_robin"})
    gen = _generation(px)
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "b",
                                                "backend": {"id": B.address, "weight": 3}})
    answered = time.monotonic()
    assert status == 200, (status, body)
    assert body["upstream"] == "b" and body["backend"]["id"] == B.address, body
    assert body["backend"]["weight"] == 3 and body["backend"]["address"] == B.address, body
    assert _servers(px)[B.address]["weight"] == 3
    assert _servers(px)[A.address]["weight"] == 1
    assert _config_servers(px)[B.address]["weight"] == 3
    # the same address again is not a change: accepted
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "b", "backend": {
        "id": B.address, "address": B.address, "weight": 3}})
    assert status == 200, (status, body)

    # live: weighted_round_robin with weights 1 and 3 gives B 3 of every 4 requests
    time.sleep(max(0.0, answered + PROPAGATION - time.monotonic()))
    n_a, n_b = A.served, B.served
    for i in range(40):
        assert px.get("/echo?i=%d" % i).status == 200
    got_a, got_b = A.served - n_a, B.served - n_b
    assert got_a + got_b == 40 and 27 <= got_b <= 33, (got_a, got_b)

    bad = [
        ({"upstream": "b", "backend": {"weight": 5}}, "id"),
        ({"upstream": "b", "backend": {"id": B.address, "address": "127.0.0.1:1"}}, "address"),
        ({"upstream": "b", "backend": {"id": B.address, "weight": 0}}, "weight"),
        ({"upstream": "b", "backend": {"id": B.address, "weight": "heavy"}}, "weight"),
        ({"upstream": "b", "backend": {"id": B.address, "wieght": 2}}, "wieght"),
        ({"upstream": "b", "backend": "x"}, None),
        ({"upstream": "b"}, None),
        ([], None),
    ]
    for payload, word in bad:
        status, body, _ = _call(px, "PUT", UPDATE, payload)
        assert status == 400, (payload, status, body)
        assert body.get("error"), body
        if word:
            assert word in body["error"], (payload, word, body)
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "b",
                                                "backend": {"id": "nope", "weight": 2}})
    assert status == 404 and "nope" in body["error"], (status, body)
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "zz",
                                                "backend": {"id": B.address, "weight": 2}})
    assert status == 404 and "zz" in body["error"], (status, body)

    servers = _servers(px)
    assert servers[B.address]["weight"] == 3 and servers[B.address]["address"] == B.address
    assert set(servers) == {A.address, B.address}
    assert _generation(px) == gen


# ----------------------------------------------------------------------------------------------
# remove

@harness.timeout(60)
def test_backends_remove(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A, B, server={"workers": 2}, upstream={"balance": "round_robin"})
    pids = px.worker_pids()
    gen = _generation(px)

    # bad calls first: nothing removed
    for query in ("", "?upstream=b", "?backend_id=%s" % B.address, "?upstream=&backend_id="):
        status, body, _ = _call(px, "DELETE", "/api/v1/backends/remove" + query)
        assert status == 400 and body.get("error"), (query, status, body)
    status, body, _ = _remove(px, "nope")
    assert status == 404 and "nope" in body["error"], (status, body)
    status, body, _ = _remove(px, B.address, upstream="zz")
    assert status == 404 and "zz" in body["error"], (status, body)
    assert set(_servers(px)) == {A.address, B.address}

    th, res, _ = _slow_in_flight(px, B, [A], 1500)
    status, body, _ = _remove(px, B.address)
    answered = time.monotonic()
    assert status == 200, (status, body)
    assert body == {"upstream": "b", "removed": B.address}, body
    assert th.is_alive(), "the slow request was not in flight at the remove"
    assert B.address not in _servers(px) and B.address not in _config_servers(px)

    # while the change propagates every request is answered; then B gets none, from any worker
    _all_ok_until(px, answered + PROPAGATION)
    n = B.served
    owners = set()
    for i in range(40):
        owner, backend, st = _hit(px, pids, "/echo?after=%d" % i)
        assert st == 200 and backend == "A", (owner, backend, st)
        owners.add(owner)
    assert B.served == n, "a removed server got %d new request(s)" % (B.served - n)
    assert owners == set(pids), "both workers should have had some of the 40: %r" % owners

    th.join(10)
    assert res.get("status") == 200 and res.get("backend") == "B", res
    assert res.get("body") == b"slow 1500\n", res

    # B is unknown now; A is the last server and cannot go
    status, body, _ = _remove(px, B.address)
    assert status == 404, (status, body)
    status, body, _ = _remove(px, A.address)
    assert status == 400 and "at least one" in body["error"], (status, body)
    assert set(_servers(px)) == {A.address}
    assert px.get("/echo").status == 200
    assert px.worker_pids() == pids and _generation(px) == gen


# ----------------------------------------------------------------------------------------------
# disconnect

@harness.timeout(60)
def test_backends_disconnect(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A, B, server={"workers": 2}, upstream={"balance": "round_robin"})
    pids = px.worker_pids()
    assert len(pids) == 2

    for query in ("", "?upstream=b", "?backend_id=%s" % B.address):
        status, body, _ = _call(px, "POST", "/api/v1/backends/disconnect" + query)
        assert status == 400 and body.get("error"), (query, status, body)
    assert _disconnect(px, "nope")[0] == 404
    assert _disconnect(px, B.address, upstream="zz")[0] == 404
    assert _servers(px)[B.address].get("drain", False) is False

    # both workers keep pooled keep-alive connections to B
    def both_pooled():
        for _ in range(4):
            assert _hit(px, pids)[2] == 200
        return set(_upstream_conns(B.port, pids).values()) == set(pids)
    harness.wait_until(both_pooled, timeout=5, interval=0, msg="both workers pool B")

    # a request in flight at B must complete; every idle pooled connection must go
    th, res, rec = _slow_in_flight(px, B, [A], 1500)
    busy_port = rec["peer"][1]
    assert busy_port in _upstream_conns(B.port, pids)
    status, body, _ = _disconnect(px, B.address)
    answered = time.monotonic()
    assert status == 200, (status, body)
    assert body == {"upstream": "b", "disconnected": B.address}, body
    assert th.is_alive(), "the slow request was not in flight at the disconnect"

    while True:
        left = {port: pid for port, pid in _upstream_conns(B.port, pids).items()
                if port != busy_port}
        if not left:
            break
        assert time.monotonic() - answered < PROPAGATION, (
            "idle pooled connections to B still open 1 s after the disconnect "
            "(local port: worker pid): %r" % left)
        time.sleep(0.02)

    assert _servers(px)[B.address]["drain"] is True
    assert _config_servers(px)[B.address].get("drain") is True

    _all_ok_until(px, answered + PROPAGATION)
    n = B.served
    owners = set()
    for i in range(40):
        owner, backend, st = _hit(px, pids, "/echo?after=%d" % i)
        assert st == 200 and backend == "A", (owner, backend, st)
        owners.add(owner)
    assert B.served == n, "a drained server got %d new request(s)" % (B.served - n)
    assert owners == set(pids), "both workers should have had some of the 40: %r" % owners
    th.join(10)
    assert res.get("status") == 200 and res.get("backend") == "B", res
    assert res.get("body") == b"slow 1500\n", res

    # undrain: traffic comes back within 1 s
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "b",
                                                "backend": {"id": B.address, "drain": False}})
    answered = time.monotonic()
    assert status == 200 and body["backend"].get("drain", False) is False, (status, body)
    n = B.served
    while time.monotonic() - answered < PROPAGATION and B.served == n:
        assert _hit(px, pids)[2] == 200
    assert B.served > n, "B got no request within 1 s of drain = false"
    assert _servers(px)[B.address].get("drain", False) is False
    assert _config_servers(px)[B.address].get("drain", False) is False


# ----------------------------------------------------------------------------------------------
# durability

@harness.timeout(90)
def test_backends_state_file_survives_reload_and_restart(t):
    A, B, C, D = t.backend("A"), t.backend("B"), t.backend("C"), t.backend("D")
    px = _admin_proxy(t, A, C, D, server={"state_file": "state.json"},
                      upstream={"balance": "round_robin"})
    state = os.path.join(os.path.dirname(px.config_path), "state.json")   # relative to the file
    assert not os.path.exists(state)
    with open(px.config_path) as f:
        config_text = f.read()

    _ok(px, "POST", ADD, {"upstream": "b", "backend": {"address": B.address}})
    harness.wait_until(lambda: os.path.exists(state) and os.path.getsize(state) > 0,
                       timeout=PROPAGATION, msg="the add was not written to " + state)
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "b",
                                                "backend": {"id": A.address, "weight": 7}})
    assert status == 200, body
    _ok(px, "DELETE", "/api/v1/backends/remove?upstream=b&backend_id=" + C.address)
    _ok(px, "POST", "/api/v1/backends/disconnect?upstream=b&backend_id=" + D.address)

    def check(when):
        servers = _servers(px)
        assert set(servers) == {A.address, B.address, D.address}, (when, servers)
        assert servers[A.address]["weight"] == 7, (when, servers[A.address])
        assert servers[D.address]["drain"] is True, (when, servers[D.address])
        cfg = _config_servers(px)
        assert set(cfg) == {A.address, B.address, D.address}, (when, cfg)
        assert cfg[A.address]["weight"] == 7 and cfg[D.address].get("drain") is True, (when, cfg)
        assert _traffic_reaches(px, B), "%s: B gets no traffic" % when
        nc, nd = C.served, D.served
        for _ in range(10):
            assert px.get("/echo").status == 200
        assert C.served == nc and D.served == nd, "%s: removed/drained server used" % when

    gen = px.status_json()["generation"]
    r = px.proxyctl("reload")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert px.status_json()["generation"] != gen
    check("after proxyctl reload")

    _restart_same_config(px)
    check("after stop + start")
    with open(px.config_path) as f:
        assert f.read() == config_text, "runtime changes belong in the state file, not the config"


@harness.timeout(60)
def test_backends_without_state_file_survive_reload_not_restart(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A)
    _ok(px, "POST", ADD, {"upstream": "b", "backend": {"address": B.address}})
    status, body, _ = _call(px, "PUT", UPDATE, {"upstream": "b",
                                                "backend": {"id": A.address, "weight": 4}})
    assert status == 200, body
    r = px.proxyctl("reload")
    assert r.returncode == 0, (r.stdout, r.stderr)
    servers = _servers(px)
    assert set(servers) == {A.address, B.address} and servers[A.address]["weight"] == 4, servers
    assert set(_config_servers(px)) == {A.address, B.address}
    assert _traffic_reaches(px, B), "B gets no traffic after the reload"

    _restart_same_config(px)
    servers = _servers(px)
    assert set(servers) == {A.address} and servers[A.address]["weight"] == 1, servers
    n = B.served
    for _ in range(6):
        assert px.get("/echo").status == 200
    assert B.served == n


# ----------------------------------------------------------------------------------------------
# PUT /api/v1/config

@harness.timeout(90)
def test_put_config(t):
    A = t.backend("A")
    px = _admin_proxy(t, A)
    before = _config(px)
    cfg, gen = before["config"], before["generation"]
    with open(px.config_path) as f:
        file_before = f.read()
    assert px.get("/new/x").json()["path"] == "/new/x"

    def unchanged():
        now = _config(px)
        assert now["config"] == cfg and now["generation"] == gen, now
        with open(px.config_path) as f:
            assert f.read() == file_before, "the config file changed"
        assert px.get("/echo").status == 200

    # invalid configs: 400 with every error, nothing changes
    bad_route = copy.deepcopy(cfg)
    bad_route["routes"].insert(0, {"path": "/bad/", "upstream": "nope"})
    bad_workers = copy.deepcopy(cfg)
    bad_workers["server"]["workers"] = "x"
    both = copy.deepcopy(bad_route)
    both["server"]["workers"] = "x"
    for bad, words in ((bad_route, ["nope"]), (bad_workers, ["workers"]),
                       (both, ["nope", "workers"])):
        status, body, _ = _call(px, "PUT", "/api/v1/config", {"config": bad})
        assert status == 400, (status, body)
        assert body.get("error") == "configuration invalid", body
        errors = body.get("errors")
        assert isinstance(errors, list) and len(errors) >= len(words), body
        for w in words:
            assert any(w in e for e in errors), (w, errors)
        unchanged()
    # not {"config": object}
    for shape in ({"cfg": cfg}, {"config": [cfg]}, {"config": "x"}, {}, [cfg], "{oops"):
        status, body, _ = _call(px, "PUT", "/api/v1/config", shape)
        assert status == 400 and body.get("error"), (str(shape)[:60], status, body)
    new = copy.deepcopy(cfg)
    new["routes"].insert(0, {"path": "/new/", "upstream": "b", "strip_prefix": True})
    for token in (None, "Bearer wrong"):
        assert _call(px, "PUT", "/api/v1/config", {"config": new}, token=token)[0] == 401
    assert _call(px, "PUT", "/api/v1/config", json.dumps({"config": new}),
                 content_type="text/plain")[0] == 415
    unchanged()

    # valid: live when answered, shown by GET, written to the file
    status, body, _ = _call(px, "PUT", "/api/v1/config", {"config": new})
    assert status == 200, (status, body)
    assert body.get("ok") is True and isinstance(body.get("generation"), int), body
    assert body["generation"] != gen, body
    r = px.get("/new/x?q=1")
    assert r.status == 200 and r.json()["path"] == "/x?q=1", r
    assert px.get("/other").json()["path"] == "/other"
    after = _config(px)
    assert after["generation"] == body["generation"] == px.status_json()["generation"]
    route = after["config"]["routes"][0]
    assert route.get("path") == "/new/" and route.get("strip_prefix") is True, route
    with open(px.config_path) as f:
        text = f.read()
    assert text != file_before and "/new/" in text, text
    r = t.run([harness.PROXYD, "-t", "-c", px.config_path])
    assert r.returncode == 0, (r.stdout, r.stderr, text)
    # the file says what GET says: a reload from it gives the same config
    r = px.proxyctl("reload")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert _config(px)["config"] == after["config"]
    assert px.get("/new/y").json()["path"] == "/y"

    # a config that validates but cannot be applied (a listen address already taken)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = copy.deepcopy(after["config"])
        taken["server"]["listen"] = list(taken["server"]["listen"]) + [
            "127.0.0.1:%d" % busy.getsockname()[1]]
        status, body, _ = _call(px, "PUT", "/api/v1/config", {"config": taken})
        assert status in (400, 500) and body.get("error"), (status, body)
        assert px.get("/new/z").json()["path"] == "/z"


@harness.timeout(60)
def test_put_config_clears_runtime_changes(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A, server={"state_file": "state.json"})
    cfg = _config(px)["config"]
    _ok(px, "POST", ADD, {"upstream": "b", "backend": {"address": B.address}})
    assert set(_servers(px)) == {A.address, B.address}
    # the PUT body is the complete config: B (a runtime change) is gone, and stays gone when
    # the state file would be re-applied (reload)
    state = os.path.join(os.path.dirname(px.config_path), "state.json")
    harness.wait_until(lambda: os.path.exists(state), timeout=PROPAGATION, msg="no " + state)
    status, body, _ = _call(px, "PUT", "/api/v1/config", {"config": cfg})
    assert status == 200, (status, body)
    assert set(_servers(px)) == {A.address}
    if os.path.exists(state):
        with open(state) as f:
            assert B.address not in f.read(), "the state file still holds the add"
    r = px.proxyctl("reload")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert set(_servers(px)) == {A.address}
    assert set(_config_servers(px)) == {A.address}
    n = B.served
    for _ in range(6):
        assert px.get("/echo").status == 200
    assert B.served == n


# ----------------------------------------------------------------------------------------------
# tokens and content types, every endpoint

@harness.timeout(60)
def test_admin_every_endpoint_needs_the_token(t):
    A, B = t.backend("A"), t.backend("B")
    px = _admin_proxy(t, A)
    cfg = _config(px)
    upd = {"upstream": "b", "backend": {"id": A.address, "weight": 9}}
    calls = [
        ("GET", "/api/v1/config", None),
        ("PUT", "/api/v1/config", {"config": cfg["config"]}),
        ("POST", "/api/v1/config/reload-tls", None),
        ("GET", "/api/v1/backends", None),
        ("GET", "/api/v1/backends?upstream=b", None),
        ("POST", ADD, {"upstream": "b", "backend": {"address": B.address}}),
        ("PUT", UPDATE, upd),
        ("DELETE", "/api/v1/backends/remove?upstream=b&backend_id=%s" % A.address, None),
        ("POST", "/api/v1/backends/disconnect?upstream=b&backend_id=%s" % A.address, None),
        ("GET", "/api/v1/stats/server", None),
        ("GET", "/api/v1/stats/backend?upstream=b&backend_id=%s" % A.address, None),
        ("DELETE", "/api/v1/cache?prefix=/", None),
        ("POST", "/api/v1/report", {"upstream": "b", "backend_id": A.address, "performance": {
            "cpu_usage": 1, "memory_usage": 1, "load_avg_1": 0.1}}),
    ]
    for method, path, body in calls:
        for token in (None, "Bearer wrong", "Bearer " + px.admin_token + "x"):
            status, reply, r = _call(px, method, path, body, token=token)
            assert status == 401, (method, path, token, status, reply)
            assert r.getheader("WWW-Authenticate", "").startswith("Bearer"), (method, path)
    for method, path, body in calls:
        if body is not None:
            status, reply, _ = _call(px, method, path, json.dumps(body),
                                     content_type="text/plain")
            assert status == 415, (method, path, status, reply)
    # none of it did anything
    servers = _servers(px)
    assert set(servers) == {A.address}, servers
    assert servers[A.address]["weight"] == 1 and servers[A.address].get("drain", False) is False
    assert _config(px)["generation"] == cfg["generation"]
    assert B.served == 0 and px.get("/echo").status == 200
