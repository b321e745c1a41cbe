/*
 * Native port: the firmware as a Linux (or any POSIX) process, which is what runs on a
 * Raspberry Pi or a Jetson and on the development host.
 *
 *   tinytelem-fw                   protocol on stdin/stdout (tinytelem's exec:/native: devices)
 *   tinytelem-fw --listen [HOST:]PORT
 *                                  TCP server, one host at a time (tcp://board:PORT); prints
 *                                  "listening on HOST:PORT" on stderr (PORT 0 picks a free one)
 *
 * The clock is CLOCK_MONOTONIC in microseconds (tick_hz 1 MHz).
 *
 * Output is buffered like a UART's TX FIFO: encoded bytes collect in a static 16 KiB buffer
 * and go out in one write() when it is full, on port_flush() (the device core calls it after
 * the frames a host waits for: HELLO, INFER_END, LOG, ERROR, PONG), and before every poll for
 * input (the core polls after each token's TOKEN/MEMORY frames and before it idles). The port
 * never looks inside the bytes. A write() per encoder call costs microseconds of syscalls and
 * wakes the host for every frame, which made natively measured tracing overhead mostly pipe
 * traffic; one write per token keeps latency bounded by a token
 * (or by the 20 ms idle poll) and bytes leave in the order they were written.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "tt_device.h"
#include "tt_port.h"

#ifndef TT_LINUX_TX_BYTES
#define TT_LINUX_TX_BYTES 16384u
#endif

static int in_fd = 0, out_fd = 1, listen_fd = -1, connected_ = 0;
static char platform_[80] = "linux";
static tt_port_info info_ = {platform_, 0, 1000000u, 0, 0, 0};
static struct timespec t0_;

static uint8_t tx_[TT_LINUX_TX_BYTES]; /* bytes written by the core, not yet sent */
static size_t tx_len_;

static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)(t.tv_sec - t0_.tv_sec) * 1000000u + (uint64_t)((t.tv_nsec - t0_.tv_nsec) / 1000);
}

static void accept_client(int blocking)
{
    struct pollfd p;
    int fd, one = 1;
    p.fd = listen_fd;
    p.events = POLLIN;
    if (!blocking && poll(&p, 1, 0) <= 0) return;
    fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    in_fd = out_fd = fd;
    connected_ = 1;
}

/* write() all of buf; 0, or -1 when the link is gone. */
static int write_all(int fd, const uint8_t *buf, size_t n)
{
    while (n) {
        ssize_t k = write(fd, buf, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        buf += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Send what is buffered to a host that is going away (best effort), then forget it: bytes
 * meant for one host never reach the next. */
static void tx_drop(void)
{
    if (tx_len_ && out_fd >= 0) (void)write_all(out_fd, tx_, tx_len_);
    tx_len_ = 0;
}

static void disconnect(void)
{
    tx_drop();
    if (listen_fd < 0) exit(0); /* stdio: the host closed our stdin */
    close(in_fd);
    in_fd = out_fd = -1;
    accept_client(1);
}

/* Send the buffer; 0, or -1 when the link broke (then the port has disconnected). */
static int tx_flush(void)
{
    size_t n = tx_len_;
    if (n == 0) return 0;
    tx_len_ = 0;
    if (out_fd < 0) return 0;
    if (write_all(out_fd, tx_, n) != 0) {
        disconnect();
        return -1;
    }
    return 0;
}

void port_init(void)
{
    struct utsname u;
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    uint64_t ram = (pages > 0 && size > 0) ? (uint64_t)pages * (uint64_t)size : 0;
    clock_gettime(CLOCK_MONOTONIC, &t0_);
    if (uname(&u) == 0) snprintf(platform_, sizeof platform_, "linux-%s", u.machine);
    info_.ram_bytes = ram > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)ram;
    signal(SIGPIPE, SIG_IGN);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    if (out_fd < 0) return;
    while (n) {
        size_t k = sizeof tx_ - tx_len_;
        if (k == 0) {
            if (tx_flush() != 0) return;
            continue;
        }
        if (k > n) k = n;
        memcpy(tx_ + tx_len_, buf, k);
        tx_len_ += k;
        buf += k;
        n -= k;
    }
}

void port_flush(void) { (void)tx_flush(); }

int port_read(void)
{
    static uint8_t buf[4096];
    static size_t len, pos;
    struct pollfd p;
    ssize_t k;
    if (pos < len) return buf[pos++];
    if (tx_flush() != 0 || in_fd < 0) return -1; /* the core is about to wait for input */
    p.fd = in_fd;
    p.events = POLLIN;
    if (poll(&p, 1, 0) <= 0) return -1;
    k = read(in_fd, buf, sizeof buf);
    if (k <= 0) {
        disconnect();
        return -1;
    }
    len = (size_t)k;
    pos = 1;
    return buf[0];
}

uint32_t port_ticks(void) { return (uint32_t)now_us(); }
uint64_t port_cycles(void) { return 0; }
uint64_t port_instructions(void) { return UINT64_MAX; }
uint32_t port_uptime_ms(void) { return (uint32_t)(now_us() / 1000u); }
uint32_t port_stack_peak(void) { return 0; }
void port_align(void) {}

void port_idle(void)
{
    struct pollfd p[2];
    nfds_t n = 0;
    if (tx_flush() != 0) return;
    if (in_fd >= 0) { p[n].fd = in_fd; p[n].events = POLLIN; n++; }
    if (listen_fd >= 0) { p[n].fd = listen_fd; p[n].events = POLLIN; n++; }
    poll(p, n, 20); /* wakes on input; a heartbeat is never late by more than 20 ms */
}

int port_new_connection(void)
{
    if (listen_fd >= 0 && in_fd >= 0) {
        /* a second host replaces the first (like re-plugging a USB CDC port) */
        struct pollfd p;
        p.fd = listen_fd;
        p.events = POLLIN;
        if (poll(&p, 1, 0) > 0) {
            tx_drop();
            close(in_fd);
            accept_client(1);
        }
    }
    if (connected_) {
        connected_ = 0;
        return 1;
    }
    return 0;
}

static void listen_on(const char *spec)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    const char *colon = strrchr(spec, ':');
    char host[64] = "127.0.0.1";
    int one = 1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    if (colon) {
        size_t n = (size_t)(colon - spec);
        if (n >= sizeof host) n = sizeof host - 1;
        memcpy(host, spec, n);
        host[n] = 0;
        spec = colon + 1;
    }
    a.sin_port = htons((uint16_t)atoi(spec));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad listen address %s (use HOST:PORT with an IPv4 host)\n", host);
        exit(2);
    }
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(listen_fd, 1) != 0) {
        perror("listen");
        exit(2);
    }
    getsockname(listen_fd, (struct sockaddr *)&a, &len);
    fprintf(stderr, "listening on %s:%u\n", host, (unsigned)ntohs(a.sin_port));
    fflush(stderr);
    accept_client(1);
}

int main(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen_on(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--listen [HOST:]PORT]\n", argv[0]);
            return 2;
        }
    }
    tt_device_main();
    return 0;
}
