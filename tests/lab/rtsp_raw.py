#!/usr/bin/env python3
"""A raw RTSP client for the lab: the requests a set-top box sends after a failover, by hand.

rtsp_raw.py URL --go FILE --out JSON

DESCRIBE, SETUP (RTP/AVP, two local UDP ports it counts datagrams on) and PLAY on one TCP
connection; then it waits until FILE exists (the test creates it after the takeover) and sends,
on the same connection: GET_PARAMETER, PAUSE (the datagrams must stop), PLAY with a Range (they
must come again), and, on a second connection with its Session header, GET_PARAMETER (a client
that reconnects is served too); then TEARDOWN on the first. Every answer must be 200, and the
first connection must never be closed or reset by the server. Writes one JSON object.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time


class Conn:
    def __init__(self, host, port, timeout):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.settimeout(timeout)
        self.buf = b""
        self.cseq = 0
        self.broken = None  # how the server ended it, if it did

    def request(self, method, url, headers=None):
        self.cseq += 1
        h = {"CSeq": str(self.cseq), "User-Agent": "rtsp_raw (oneframe lab)"}
        h.update(headers or {})
        msg = f"{method} {url} RTSP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        try:
            self.s.sendall(msg.encode())
            return self.read_response()
        except ConnectionResetError:
            self.broken = self.broken or "rst"
        except (socket.timeout, TimeoutError):
            self.broken = self.broken or "timeout"
        except OSError as e:
            self.broken = self.broken or f"error: {e}"
        return {"status": 0, "headers": {}, "body": ""}

    def read_response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                self.broken = self.broken or "fin"
                return {"status": 0, "headers": {}, "body": ""}
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = self.s.recv(4096)
            if not chunk:
                self.broken = self.broken or "fin"
                break
            rest += chunk
        self.buf = rest[n:]
        status = int(lines[0].split()[1]) if lines[0].startswith("RTSP/") else 0
        return {"status": status, "headers": headers, "body": rest[:n].decode(errors="replace")}

    def close(self):
        self.s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--go", required=True, help="start the after-takeover requests once this file exists")
    ap.add_argument("--out", required=True, help="write the JSON result here")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer")
    ap.add_argument("--max-wait", type=float, default=300.0, help="give up waiting for --go after this long")
    a = ap.parse_args()

    rest = a.url[len("rtsp://"):]
    hostport, _, _ = rest.partition("/")
    host, _, port = hostport.partition(":")
    port = int(port or 554)
    result = {"ok": False, "steps": []}

    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("0.0.0.0", 0))
    rport = rtp.getsockname()[1]
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("0.0.0.0", rport + 1))
    received = {"n": 0, "last": 0.0}
    stop = threading.Event()

    def count():
        rtp.settimeout(0.2)
        while not stop.is_set():
            try:
                rtp.recv(2048)
                received["n"] += 1
                received["last"] = time.monotonic()
            except (socket.timeout, TimeoutError):
                pass

    threading.Thread(target=count, daemon=True).start()

    def step(name, conn, r, want=200):
        result["steps"].append({"step": name, "status": r["status"], "ok": r["status"] == want})
        return r["status"] == want

    c = Conn(host, port, a.timeout)
    ok = step("DESCRIBE", c, c.request("DESCRIBE", a.url, {"Accept": "application/sdp"}))
    r = c.request("SETUP", a.url + "/trackID=1", {"Transport": f"RTP/AVP;unicast;client_port={rport}-{rport + 1}"})
    ok = step("SETUP", c, r) and ok
    session = r["headers"].get("session", "").split(";")[0]
    ok = step("PLAY", c, c.request("PLAY", a.url, {"Session": session, "Range": "npt=0-"})) and ok
    deadline = time.monotonic() + a.max_wait
    while not os.path.exists(a.go) and time.monotonic() < deadline and not c.broken:
        time.sleep(0.05)
    if not os.path.exists(a.go):
        result["error"] = "never told to go on"
    sess = {"Session": session}
    ok = step("GET_PARAMETER", c, c.request("GET_PARAMETER", a.url, sess)) and ok
    ok = step("PAUSE", c, c.request("PAUSE", a.url, sess)) and ok
    time.sleep(0.3)  # what was in flight arrives
    before = received["n"]
    time.sleep(1.0)
    paused_extra = received["n"] - before
    result["datagrams_while_paused"] = paused_extra
    ok = ok and paused_extra == 0
    ok = step("PLAY Range", c, c.request("PLAY", a.url, dict(sess, Range="npt=10-"))) and ok
    before = received["n"]
    time.sleep(1.0)
    result["datagrams_after_play"] = received["n"] - before
    ok = ok and received["n"] > before
    # A client that comes back on a new connection with its Session header is served too.
    c2 = Conn(host, port, a.timeout)
    ok = step("GET_PARAMETER (new connection)", c2, c2.request("GET_PARAMETER", a.url, sess)) and ok
    c2.close()
    ok = step("TEARDOWN", c, c.request("TEARDOWN", a.url, sess)) and ok
    stop.set()
    result["session"] = session
    result["datagrams"] = received["n"]
    result["connection_broken"] = c.broken
    result["ok"] = bool(ok and c.broken is None and session)
    c.close()
    with open(a.out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
