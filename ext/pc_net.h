/* pc_net.h -- thin socket helpers for the connection loop (ext/_loop.pyx).
 *
 * sockaddr juggling is clearer in C than in Cython. Every function returns a
 * file descriptor or 0 on success and -errno on failure; none touches Python.
 * Addresses are numeric IPv4/IPv6 literals (the loop resolves names before).
 */
#ifndef PC_NET_H
#define PC_NET_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct {
    struct sockaddr_storage ss;
    socklen_t len;
} pc_addr;

/* Parse a numeric host ("" = 0.0.0.0) and a port into *a. 0 or -EINVAL. */
static inline int pc_addr_parse(const char *host, int port, pc_addr *a) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;
    memset(a, 0, sizeof(*a));
    if (port < 0 || port > 65535) return -EINVAL;
    if (host[0] == '\0') host = "0.0.0.0";
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a->len = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->len = sizeof(*v6);
        return 0;
    }
    return -EINVAL;
}

/* Format *a as a numeric host (buffer of at least INET6_ADDRSTRLEN) and port. */
static inline int pc_addr_format(const pc_addr *a, char *host, size_t hostlen, int *port) {
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &v4->sin_addr, host, (socklen_t)hostlen)) return -errno;
        *port = ntohs(v4->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        if (!inet_ntop(AF_INET6, &v6->sin6_addr, host, (socklen_t)hostlen)) return -errno;
        *port = ntohs(v6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

/* Local (peer == 0) or remote (peer != 0) address of a socket. */
static inline int pc_sock_addr(int fd, int peer, pc_addr *a) {
    a->len = sizeof(a->ss);
    if ((peer ? getpeername(fd, (struct sockaddr *)&a->ss, &a->len)
              : getsockname(fd, (struct sockaddr *)&a->ss, &a->len)) < 0)
        return -errno;
    return 0;
}

static inline void pc_set_nodelay(int fd) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Make close() send RST instead of FIN (abort). */
static inline void pc_set_linger0(int fd) {
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* Pending socket error (SO_ERROR): 0, a positive errno, or -errno on failure. */
static inline int pc_so_error(int fd) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
    return err;
}

/* A non-blocking listening socket; SO_REUSEADDR always, SO_REUSEPORT on request. */
static inline int pc_listen(const pc_addr *a, int backlog, int reuse_port) {
    int one = 1;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) goto fail;
#ifdef SO_REUSEPORT
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) goto fail;
#else
    if (reuse_port) { errno = ENOPROTOOPT; goto fail; }
#endif
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) goto fail;
    if (listen(fd, backlog) < 0) goto fail;
    return fd;
fail:
    {
        int err = errno;
        close(fd);
        return -err;
    }
}

/* accept4() one connection, non-blocking and close-on-exec, TCP_NODELAY on;
 * the peer's address goes to *peer (the connect-rate limit keys on it). */
static inline int pc_accept(int lfd, pc_addr *peer) {
    int fd;
    peer->len = sizeof(peer->ss);
    fd = accept4(lfd, (struct sockaddr *)&peer->ss, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    pc_set_nodelay(fd);
    return fd;
}

/* The key of a source address for the per-source connect-rate limit, in
 * key[16]: key[0] = 4 or 6, then the IPv4 address, or the /64 prefix of an
 * IPv6 address (one host or one customer usually gets a whole /64, so keying
 * on the full address would give one attacker 2^64 buckets). An IPv4-mapped
 * IPv6 address (a dual-stack listener) is keyed as the IPv4 address.
 * Returns 1 for a loopback source, 0 for another, -1 for a family without a
 * key (the limit then does not apply). */
static inline int pc_addr_key(const pc_addr *a, unsigned char key[16]) {
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        key[0] = 4;
        memcpy(key + 1, &v4->sin_addr, 4);
        return key[1] == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        const unsigned char *b = (const unsigned char *)&v6->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            key[0] = 4;
            memcpy(key + 1, b + 12, 4);
            return key[1] == 127;
        }
        key[0] = 6;
        memcpy(key + 1, b, 8);
        return IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr) ? 1 : 0;
    }
    return -1;
}

/* Turn a just-accepted connection away: read what it already sent (so that
 * close() sends FIN, not an RST that could destroy the frame before the peer
 * reads it), write *frame* (a few bytes: the socket buffer takes them), close. */
static inline void pc_refuse(int fd, const unsigned char *frame, size_t n,
                             unsigned char *scratch, size_t scratch_size) {
    (void)recv(fd, scratch, scratch_size, MSG_DONTWAIT);
    (void)send(fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

/* Start a non-blocking connect, optionally from a source address. Returns the
 * fd (the connect is in progress or done) or -errno. *failed gets the errno of
 * a connect() that failed at once (the fd is still returned so the failure is
 * reported like an asynchronous one). */
static inline int pc_connect(const pc_addr *a, const pc_addr *src, int *failed) {
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    *failed = 0;
    if (fd < 0) return -errno;
    pc_set_nodelay(fd);
    if (src) {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)&src->ss, src->len) < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
    }
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS)
        *failed = errno;
    return fd;
}

/* writev() that never raises SIGPIPE (plain send() for one buffer: the
 * kernel then skips copying a msghdr and an iovec array in). */
static inline ssize_t pc_writev(int fd, struct iovec *iov, int iovcnt) {
    struct msghdr msg;
    if (iovcnt == 1)
        return send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)iovcnt;
    return sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

#endif /* PC_NET_H */
