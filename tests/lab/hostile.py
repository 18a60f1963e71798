#!/usr/bin/env python3
"""Hostile traffic against a failover pair from a client namespace of the lab (raw sockets).

hostile.py flood SECONDS        header-valid forged peer messages (random tags, current send time)
                                with the partners' addresses as sources, to both servers' admin
                                and private addresses and to the stream IP, port 7400
hostile.py reflect-replay       capture srv1's heartbeats to srv2 on the hub; send one back to
                                srv1 as if from srv2 (reflected) and the same ones to srv2 again
                                (replayed)
hostile.py icmp CLIENT PORT RTP  ICMP port unreachable "from" CLIENT for the stream IP's datagrams
                                from RTP to CLIENT:PORT (as if the viewer had gone)
hostile.py fence COUNT          frames "from" the stream IP, as if the partner had taken over: RTP
                                to a client and forged takeover announcements (random tokens) to
                                both servers' admin addresses, COUNT of each
Prints one JSON object of what it sent.
"""
import json
import os
import socket
import struct
import sys
import time

STREAM_IP, ADMIN = "10.77.0.1", {"srv1": "10.77.0.11", "srv2": "10.77.0.12"}
PRIVATE = {"srv1": "10.78.0.1", "srv2": "10.78.0.2"}
PEER_PORT = 7400
MAGIC, VERSION = 0x4F46504C, 1


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_packet(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), os.getpid() & 0xFFFF, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def udp_packet(src, sport, dst, dport, data):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(src), socket.inet_aton(dst), 0, 17, len(u))
    c = csum(pseudo + u) or 0xFFFF
    return ip_packet(src, dst, 17, u[:6] + struct.pack("!H", c) + u[8:])


def raw_sender():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL implied
    return s


def send_spoofed(s, pkt, dst):
    try:
        s.sendto(pkt, (dst, 0))
        return 1
    except OSError:
        return 0


def forged_peer_message(msg_type, seq):
    # A heartbeat-shaped body (state, sessions, offset, no progress) with a random tag.
    body = struct.pack("!BIIH", 5, 0, 0, 0) if msg_type == 1 else struct.pack("!BH", 1, 4) + b"dead"
    hdr = struct.pack("!IBBHQQQ", MAGIC, VERSION, msg_type, len(body), 0xBADBADBAD, seq, time.time_ns())
    return hdr + body + os.urandom(32)


def flood(seconds):
    s = raw_sender()
    sent, seq, end = 0, 1, time.monotonic() + seconds
    # Every target with the source its owner would trust: the partner's address for that path.
    targets = [(ADMIN["srv2"], ADMIN["srv1"]), (ADMIN["srv1"], ADMIN["srv2"]),
               (PRIVATE["srv2"], PRIVATE["srv1"]), (PRIVATE["srv1"], PRIVATE["srv2"]),
               (STREAM_IP, ADMIN["srv1"])]
    while time.monotonic() < end:
        for dst, src in targets:
            for t in (1, 3):  # heartbeats and failover notices
                sent += send_spoofed(s, udp_packet(src, PEER_PORT, dst, PEER_PORT, forged_peer_message(t, seq)), dst)
        seq += 1
    return {"flood_seconds": seconds, "sent": sent}


def capture_peer_messages(src, dst, count, timeout):
    """UDP datagrams src:7400 -> dst:7400 seen on the hub (the client receives the hub's floods)."""
    c = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    c.bind(("eth0", 0))
    c.settimeout(0.2)
    got, end = [], time.monotonic() + timeout
    while len(got) < count and time.monotonic() < end:
        try:
            f = c.recv(2048)
        except (socket.timeout, TimeoutError):
            continue
        ip = f[14:]
        if len(ip) < 28 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        if socket.inet_ntoa(ip[12:16]) != src or socket.inet_ntoa(ip[16:20]) != dst:
            continue
        sport, dport, ulen = struct.unpack("!HHH", ip[ihl:ihl + 6])
        if sport == PEER_PORT and dport == PEER_PORT:
            got.append(ip[ihl + 8:ihl + ulen])
    return got


def reflect_replay():
    msgs = capture_peer_messages(ADMIN["srv1"], ADMIN["srv2"], 20, 5.0)
    s = raw_sender()
    reflected = replayed = 0
    for m in msgs:
        # Back to its sender, as if from its partner: a node must refuse its own messages.
        reflected += send_spoofed(s, udp_packet(ADMIN["srv2"], PEER_PORT, ADMIN["srv1"], PEER_PORT, m), ADMIN["srv1"])
        # To its receiver again: already seen.
        replayed += send_spoofed(s, udp_packet(ADMIN["srv1"], PEER_PORT, ADMIN["srv2"], PEER_PORT, m), ADMIN["srv2"])
        # And on the other path (the private one, via the LAN): signed for another path.
        replayed += send_spoofed(s, udp_packet(PRIVATE["srv1"], PEER_PORT, PRIVATE["srv2"], PEER_PORT, m), PRIVATE["srv2"])
    return {"captured": len(msgs), "reflected": reflected, "replayed": replayed}


def icmp_unreachable(client, port, rtp_port, count=50):
    # The quoted datagram: the stream IP's RTP to the viewer.
    quoted = udp_packet(STREAM_IP, rtp_port, client, port, b"\0" * 8)[:28]
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    s = raw_sender()
    sent = 0
    for _ in range(count):
        sent += send_spoofed(s, ip_packet(client, STREAM_IP, 1, icmp), STREAM_IP)
        time.sleep(0.01)
    return {"icmp_sent": sent}


def forged_fence(count):
    s = raw_sender()
    rtp = forged = 0
    for i in range(count):
        payload = struct.pack("!BBHII", 0x80, 33, i & 0xFFFF, i * 3600, 0x1234) + b"\x47" + os.urandom(187)
        rtp += send_spoofed(s, udp_packet(STREAM_IP, 6970, "10.77.0.102", 5000, payload), "10.77.0.102")
        for n in ("srv1", "srv2"):
            forged += send_spoofed(s, udp_packet(STREAM_IP, PEER_PORT, ADMIN[n], PEER_PORT, os.urandom(16)), ADMIN[n])
        if i % 50 == 49:
            time.sleep(0.01)
    return {"stream_ip_rtp": rtp, "forged_announcements": forged}


def main(argv):
    if len(argv) == 3 and argv[1] == "flood":
        r = flood(float(argv[2]))
    elif len(argv) == 2 and argv[1] == "reflect-replay":
        r = reflect_replay()
    elif len(argv) == 3 and argv[1] == "fence":
        r = forged_fence(int(argv[2]))
    elif len(argv) == 5 and argv[1] == "icmp":
        r = icmp_unreachable(argv[2], int(argv[3]), int(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
