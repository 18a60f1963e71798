#include "tcp_takeover/repair.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace of::tcp_takeover {
namespace {

Status set(int fd, int opt, const void* v, socklen_t len, const char* what) {
    if (setsockopt(fd, SOL_TCP, opt, v, len) < 0) return errno_error(what);
    return {};
}
Status set_int(int fd, int opt, int v, const char* what) { return set(fd, opt, &v, sizeof v, what); }

Status set_queue_seq(int fd, int queue, uint32_t seq) {
    if (auto s = set_int(fd, TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE"); !s) return s;
    return set(fd, TCP_QUEUE_SEQ, &seq, sizeof seq, "TCP_QUEUE_SEQ");
}

// Writes all of `data`; in repair mode with the send queue selected the kernel queues it as
// sent without transmitting it.
Status write_all(int fd, std::string_view data, const char* what) {
    while (!data.empty()) {
        ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return errno_error(what);
        data.remove_prefix(size_t(n));
    }
    return {};
}

Status restore(int fd, const Revival& r) {
    if (auto s = set_int(fd, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR"); !s) return s;
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr = r.server;
    local.sin_port = htons(r.server_port);
    // Repair mode lets the socket share the port with the listener (SK_FORCE_REUSE).
    if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) < 0) return errno_error("bind");
    // Sequence numbers are set while the socket is still closed.
    if (auto s = set_queue_seq(fd, TCP_RECV_QUEUE, r.rcv_nxt); !s) return s;
    if (auto s = set_queue_seq(fd, TCP_SEND_QUEUE, r.snd_una); !s) return s;
    sockaddr_in peer{};
    peer.sin_family = AF_INET;
    peer.sin_addr = r.key.client;
    peer.sin_port = htons(r.key.port);
    // In repair mode connect() sends nothing: the socket is ESTABLISHED at once.
    if (connect(fd, reinterpret_cast<sockaddr*>(&peer), sizeof peer) < 0) return errno_error("connect (repair)");

    tcp_repair_opt opts[4];
    unsigned n = 0;
    opts[n++] = {TCPOPT_MAXSEG, r.mss};
    if (r.wscale_ok) opts[n++] = {TCPOPT_WINDOW, uint32_t(r.snd_wscale) | uint32_t(r.rcv_wscale) << 16};
    if (r.sack_ok) opts[n++] = {TCPOPT_SACK_PERMITTED, 0};
    if (r.timestamps) opts[n++] = {TCPOPT_TIMESTAMP, 0};
    if (auto s = set(fd, TCP_REPAIR_OPTIONS, opts, socklen_t(n * sizeof opts[0]), "TCP_REPAIR_OPTIONS"); !s) return s;
    if (r.timestamps) {
        // Our TSval clock continues the old server's (the client drops segments whose TSval
        // went backwards: PAWS, RFC 7323 5).
        uint32_t ts = r.ts_val;
        if (auto s = set(fd, TCP_TIMESTAMP, &ts, sizeof ts, "TCP_TIMESTAMP"); !s) return s;
    }
    if (!r.unacked.empty()) {
        if (auto s = set_int(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE"); !s) return s;
        if (auto s = write_all(fd, r.unacked, "restore the send queue"); !s) return s;
    }
    tcp_repair_window w{};
    w.snd_wl1 = r.snd_wl1;
    w.snd_wnd = r.snd_wnd;
    w.max_window = r.snd_wnd;
    w.rcv_wnd = r.rcv_wnd;
    w.rcv_wup = r.rcv_nxt;
    if (auto s = set(fd, TCP_REPAIR_WINDOW, &w, sizeof w, "TCP_REPAIR_WINDOW"); !s) return s;
    // Leaving repair mode sends a window probe: the client answers with an ACK that tells this
    // socket at once what it holds.
    if (auto s = set_int(fd, TCP_REPAIR, TCP_REPAIR_OFF, "TCP_REPAIR off"); !s) return s;
    int one = 1;
    (void)setsockopt(fd, SOL_TCP, TCP_NODELAY, &one, sizeof one);  // answers are whole messages
    // Leaving repair mode cleared the port sharing it allowed; a listener on the same port (made
    // now or later) needs every socket there to allow it, as accepted sockets inherit from theirs.
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return errno_error("SO_REUSEADDR");
    return {};
}

}  // namespace

Result<int> revive(const Revival& r) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket");
    if (auto s = restore(fd, r); !s) {
        close_silently(fd);
        return make_error(s.error().code, "revive " + to_string(r.key) + ": " + s.error().message);
    }
    return fd;
}

void close_silently(int fd) {
    int on = TCP_REPAIR_ON;
    // In repair mode the kernel forgets the connection without telling the peer.
    (void)setsockopt(fd, SOL_TCP, TCP_REPAIR, &on, sizeof on);
    close(fd);
}

}  // namespace of::tcp_takeover
