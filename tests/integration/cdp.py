"""A small Chrome DevTools Protocol client for the browser tests (standard library only).

    chrome = cdp.Chromium.launch(t.path("chromium"), spawn=t.spawn)   # headless, 127.0.0.1 only
    try:
        page = chrome.new_page()
        page.navigate("http://127.0.0.1:%d/" % port)
        page.wait_for("document.querySelector('#login') !== null", timeout=5)
        page.click("#login button[type=submit]")
        page.screenshot(t.path("page.png"))
    finally:
        chrome.close()

`Chromium.launch` starts Debian's /usr/bin/chromium with --headless=new, --remote-debugging-port=0
on 127.0.0.1 (the port it picked is read from DevToolsActivePort in the temporary
--user-data-dir), --no-sandbox (the tests run as root) and the flags it needs in a container
(--disable-gpu, --disable-dev-shm-usage). It raises `Unavailable` when chromium is not installed
or does not come up, so that a test can say why and skip. One WebSocket to the browser endpoint
carries every page (Target.attachToTarget with flatten: each page is a session id). Every wait is
bounded; `close` ends the browser (Browser.close, then SIGKILL by pid for it and every process
it started)."""

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.parse

import harness

CHROMIUM = "/usr/bin/chromium"


class Unavailable(Exception):
    """chromium is not installed or cannot start here."""


class Error(Exception):
    """A protocol error answer, or a JavaScript exception in an evaluated expression."""


# ----------------------------------------------------------------------------------------------
# WebSocket client (RFC 6455), just what the DevTools endpoint needs: text messages, masked
# client frames, fragmented messages, ping/pong and close.

class WebSocket:
    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise ValueError("only ws:// URLs: %r" % url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (path or "/", u.hostname, u.port or 80, key))
        self.sock.sendall(req.encode())
        self.buf = bytearray()
        head = self._read_head(timeout)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise Error("WebSocket handshake refused: %r" % head[:300])
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if want.lower() not in head.lower():
            raise Error("WebSocket handshake: wrong Sec-WebSocket-Accept: %r" % head[:300])
        self.closed = False
        self._parts = []

    def _read_head(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        i = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:i])
        del self.buf[:i]
        return head

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("WebSocket: nothing received in time")
        self.sock.settimeout(min(left, 1.0))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        if not data:
            self.closed = True
            raise Error("WebSocket: the browser closed the connection")
        self.buf += data

    def _send_frame(self, opcode, payload):
        head = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += struct.pack("!H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack("!Q", n)
        mask = os.urandom(4)
        head += mask
        masked = _mask_fast(payload, mask)
        self.sock.settimeout(10.0)
        self.sock.sendall(bytes(head) + masked)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def _frame(self):
        """(fin, opcode, payload) of a complete frame at the start of the buffer (consumed), or
        None while it is incomplete."""
        b = self.buf
        if len(b) < 2:
            return None
        n, i = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack("!Q", b[2:10])[0], 10
        mask = None
        if b[1] & 0x80:
            if len(b) < i + 4:
                return None
            mask, i = bytes(b[i:i + 4]), i + 4
        if len(b) < i + n:
            return None
        payload = bytes(b[i:i + n])
        fin, opcode = b[0] & 0x80, b[0] & 0x0F
        del b[:i + n]
        if mask:
            payload = _mask_fast(payload, mask)
        return fin, opcode, payload

    def recv(self, timeout):
        """The next text message (str), or None if none is complete within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._frame()
            if f is None:
                try:
                    self._fill(deadline)
                except TimeoutError:
                    return None
                continue
            fin, opcode, payload = f
            if opcode == 0x9:            # ping
                self._send_frame(0xA, payload)
            elif opcode == 0xA:          # pong
                pass
            elif opcode == 0x8:          # close
                self.closed = True
                raise Error("WebSocket: the browser sent close")
            else:
                self._parts.append(payload)
                if fin:
                    msg = b"".join(self._parts)
                    self._parts = []
                    return msg.decode("utf-8", errors="replace")

    def close(self):
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


def _mask_fast(data, mask):
    n = len(data)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ m).to_bytes(n, "big") if n else b""


# ----------------------------------------------------------------------------------------------
# the protocol

class Connection:
    """Commands and events over one WebSocket. Commands for a page carry its session id."""

    def __init__(self, ws_url, timeout=10.0):
        self.ws = WebSocket(ws_url, timeout)
        self.next_id = 0
        self.events = []     # (session id or None, method, params), oldest first

    def _dispatch(self, msg):
        if "method" in msg and "id" not in msg:
            # kept for the whole run (a test makes a few thousand at most): callers remember
            # len(events) and look at what came after
            self.events.append((msg.get("sessionId"), msg["method"], msg.get("params", {})))
            return None
        return msg

    def call(self, method, params=None, session=None, timeout=10.0):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("CDP %s: no answer within %.0fs" % (method, timeout))
            raw = self.ws.recv(left)
            if raw is None:
                continue
            reply = self._dispatch(json.loads(raw))
            if reply is None or reply.get("id") != mid:
                continue
            if "error" in reply:
                raise Error("CDP %s: %s" % (method, reply["error"].get("message", reply["error"])))
            return reply.get("result", {})

    def wait_event(self, method, session=None, pred=None, timeout=10.0, since=0):
        """The params of the first event `method` (of that session, matching pred) among those
        queued from index `since` on, or arriving within timeout."""
        deadline = time.monotonic() + timeout
        i = since
        while True:
            while i < len(self.events):
                s, m, p = self.events[i]
                i += 1
                if m == method and (session is None or s == session) and (pred is None or pred(p)):
                    return p
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("CDP: no %s event within %.0fs" % (method, timeout))
            raw = self.ws.recv(min(left, 0.5))
            if raw is not None:
                self._dispatch(json.loads(raw))

    def pump(self, seconds):
        """Read (and queue) events for that long."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            raw = self.ws.recv(left)
            if raw is not None:
                self._dispatch(json.loads(raw))

    def close(self):
        self.ws.close()


# the JavaScript errors that mean "the page is navigating": evaluate again on the next document
_NAVIGATING = ("Execution context was destroyed", "Cannot find context",
               "Inspected target navigated",
               "Cannot find default execution context", "uniqueContextId not found")


class Page:
    """One tab, attached in flatten mode (commands carry its session id)."""

    def __init__(self, conn, target_id, session):
        self.conn = conn
        self.target_id = target_id
        self.session = session

    def call(self, method, params=None, timeout=10.0):
        return self.conn.call(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression, await_promise=False, timeout=10.0):
        """The value of a JavaScript expression (returnByValue: JSON-able values only).
        A thrown exception raises Error with its text."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": await_promise,
                                           "userGesture": True}, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            text = (d.get("exception") or {}).get("description") or d.get("text")
            raise Error("JavaScript exception in %r: %s" % (expression[:200], text))
        return r.get("result", {}).get("value")

    def navigate(self, url, timeout=15.0):
        """Load url; returns once the load event fired (bounded by timeout). Raises on a
        network error (errorText)."""
        since = len(self.conn.events)
        r = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if r.get("errorText"):
            raise Error("navigating to %s: %s" % (url, r["errorText"]))
        self.conn.wait_event("Page.loadEventFired", self.session, timeout=timeout, since=since)
        return r

    def wait_for(self, expression, timeout=5.0, interval=0.1, msg=None):
        """Evaluate expression until it is truthy (returned) or timeout seconds pass (raise
        AssertionError with msg and the last value). Navigation in between is tolerated."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                v = self.evaluate(expression)
                if v:
                    return v
                last = v
            except Error as e:
                if (not any(s in str(e) for s in _NAVIGATING)
                        and "JavaScript exception" not in str(e)):
                    raise
                last = str(e)
            if time.monotonic() >= deadline:
                raise AssertionError("%s (not true within %.1fs: %s; last value %r)"
                                     % (msg or "browser condition", timeout, expression[:300],
                                        last))
            self.conn.pump(interval)

    def insert_text(self, text):
        """Type text into the focused element (Input.insertText: what an IME commit does)."""
        self.call("Input.insertText", {"text": text})

    def click(self, selector):
        """A real left click (mouse events at the element's centre) on the first element that
        matches the CSS selector, scrolled into view first. Raises if there is none or it has
        no box (hidden)."""
        box = self.evaluate("""(() => {
            const e = document.querySelector(%s);
            if (!e) return null;
            e.scrollIntoView({block: 'center', inline: 'center'});
            const r = e.getBoundingClientRect();
            return {x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height};
        })()""" % json.dumps(selector))
        if not box:
            raise AssertionError("no element matches %r" % selector)
        if box["w"] <= 0 or box["h"] <= 0:
            raise AssertionError("%r is not visible (box %r)" % (selector, box))
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            p = {"type": kind, "x": box["x"], "y": box["y"]}
            if kind != "mouseMoved":
                p.update(button="left", clickCount=1)
            self.call("Input.dispatchMouseEvent", p)

    def screenshot(self, path, full_page=True):
        """A PNG of the page (the whole document with full_page) written to path; the bytes."""
        params = {"format": "png"}
        if full_page:
            m = self.call("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m.get("contentSize")
            params["clip"] = {"x": 0, "y": 0, "width": max(1, size["width"]),
                              "height": min(max(1, size["height"]), 4000), "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.call("Page.captureScreenshot", params, timeout=20)["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def cookies(self, url=None):
        """The cookies the browser would send to url (default: the page's URL)."""
        p = {"urls": [url]} if url else {}
        return self.call("Network.getCookies", p)["cookies"]

    def url(self):
        return self.evaluate("location.href")

    def close(self):
        try:
            self.conn.call("Target.closeTarget", {"targetId": self.target_id}, timeout=5)
        except (Error, TimeoutError, OSError):
            pass


# ----------------------------------------------------------------------------------------------
# the browser process

class Chromium:
    def __init__(self, proc, user_data_dir, port, ws_url, log_path):
        self.proc = proc
        self.user_data_dir = user_data_dir
        self.port = port
        self.log_path = log_path
        self.seen = set()
        self.conn = Connection(ws_url)
        self._note_children()

    @classmethod
    def launch(cls, workdir, spawn=None, binary=CHROMIUM, extra_args=(), timeout=30.0,
               window=(1280, 900)):
        """Start headless chromium with its profile and log under workdir. spawn: a Popen-like
        factory (the harness's t.spawn, so that the test's cleanup kills it by pid too)."""
        if not os.access(binary, os.X_OK):
            raise Unavailable("%s is not installed (apt-get install chromium)" % binary)
        os.makedirs(workdir, exist_ok=True)
        udd = os.path.join(workdir, "profile")
        os.makedirs(udd, exist_ok=True)
        log_path = os.path.join(workdir, "chromium.log")
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", "--user-data-dir=" + udd, "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--password-store=basic", "--use-mock-keychain",
                "--mute-audio", "--hide-scrollbars",
                "--window-size=%d,%d" % window] + list(extra_args) + ["about:blank"]
        env = dict(os.environ)
        env.setdefault("HOME", workdir)
        env["XDG_CONFIG_HOME"] = os.path.join(workdir, "xdg-config")
        env["XDG_CACHE_HOME"] = os.path.join(workdir, "xdg-cache")
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        env["DBUS_SESSION_BUS_ADDRESS"] = "disabled:"
        log = open(log_path, "wb")
        try:
            kw = dict(stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
            proc = spawn(args, **kw) if spawn else subprocess.Popen(
                args, stdin=subprocess.DEVNULL, **kw)
        except OSError as e:
            log.close()
            raise Unavailable("cannot run %s: %s" % (binary, e))
        log.close()
        port_file = os.path.join(udd, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        port = path = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                    port, path = int(lines[0]), lines[1].strip()
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if port is None:
            out = _tail(log_path)
            _kill_tree(proc)
            raise Unavailable("chromium did not open its DevTools port within %.0fs (exit code "
                              "%r); its output:\n%s" % (timeout, proc.poll(), out))
        try:
            return cls(proc, udd, port, "ws://127.0.0.1:%d%s" % (port, path), log_path)
        except (OSError, Error, TimeoutError) as e:
            _kill_tree(proc)
            raise Unavailable("chromium's DevTools endpoint did not answer: %s\n%s"
                              % (e, _tail(log_path)))

    def _note_children(self):
        if self.proc.poll() is None:
            self.seen.update(harness.descendants_of(self.proc.pid))

    def new_page(self, url="about:blank", width=1280, height=900):
        """A new tab (in the default browser context: cookies shared with every other tab),
        attached, with Page, Runtime and Network enabled."""
        target = self.conn.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.conn.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self.conn, target, session)
        for m in ("Page.enable", "Runtime.enable", "Network.enable"):
            page.call(m)
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self._note_children()
        if url != "about:blank":
            page.navigate(url)
        return page

    def version(self):
        return self.conn.call("Browser.getVersion")

    def log(self):
        return _tail(self.log_path, 4000)

    def close(self):
        """Browser.close, up to 5 s for the process to exit; then SIGKILL by pid to it and to
        every process of it still alive."""
        self._note_children()
        try:
            self.conn.call("Browser.close", timeout=3)
        except (Error, TimeoutError, OSError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        _kill_tree(self.proc, self.seen)


def _kill_tree(proc, known=()):
    pids = set(known)
    if proc.poll() is None:
        pids.update(harness.descendants_of(proc.pid))
        try:
            proc.kill()
        except OSError:
            pass
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"chrom" in cmd:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _tail(path, n=3000):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    # the container's missing D-Bus is noise, not the reason
    lines = [l for l in text.splitlines() if "dbus" not in l.lower()]
    return "\n".join(lines)[-n:]


def png_size(data):
    """(width, height) of PNG bytes; raises ValueError if they are not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack("!II", data[16:24])


def png_colors(data, limit=64):
    """The distinct pixel values (up to limit) of an 8-bit, non-interlaced RGB or RGBA PNG, as
    Page.captureScreenshot writes them: a test can tell a rendered page from a blank one."""
    import zlib
    w, h = png_size(data)
    depth, ctype, interlace = data[24], data[25], data[28]
    if depth != 8 or ctype not in (2, 6) or interlace != 0:
        raise ValueError("unsupported PNG (depth %d, colour type %d, interlace %d)"
                         % (depth, ctype, interlace))
    bpp = 3 if ctype == 2 else 4
    idat, i = bytearray(), 8
    while i < len(data):
        n, kind = struct.unpack("!I4s", data[i:i + 8])
        if kind == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    raw = zlib.decompress(bytes(idat))
    stride = w * bpp
    prev = bytearray(stride)
    colors = set()
    pos = 0
    for _ in range(h):
        ft = raw[pos]
        line = bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            if ft == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ft == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ft == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 0xFF
            elif ft == 4:
                c = prev[x - bpp] if x >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 0xFF
        for x in range(0, stride, bpp * 7):   # a sample of the row is enough
            colors.add(bytes(line[x:x + bpp]))
        if len(colors) >= limit:
            break
        prev = line
    return colors
