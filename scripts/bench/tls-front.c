/*
 * tls-front.c - the TLS terminator of scenario 14: accepts TLS (SMTPS,
 * wrapper mode) on LISTEN and relays each connection's plaintext to the
 * smtp-sink at BACKEND, one thread per connection (socat's fork per
 * connection, without socat's per-transfer overhead, so that the front
 * is not the bottleneck of the scenario).
 *
 * Each connection thread waits in poll(2) on both sockets; TLS records
 * are read with read-ahead (one recv for several records where they
 * arrived together) and every chunk read is written out at once, so a
 * pipelined SMTP command group or a message body crosses the front in one
 * read and one write each way. The front neither parses nor buffers SMTP.
 *
 * Usage: tls-front CERT KEY LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
 * Runs until killed; errors on a connection close that connection only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static SSL_CTX *ctx;
static int backend_port;

struct conn {
    int client;
};

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int ssl_write_all(SSL *ssl, const char *buf, size_t len)
{
    while (len > 0) {
        int n = SSL_write(ssl, buf, (int)len);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int connect_backend(void)
{
    struct sockaddr_in sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)backend_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void relay(SSL *ssl, int client, int backend)
{
    char buf[65536];
    struct pollfd pfd[2];
    for (;;) {
        /* Records already decrypted or read ahead wait in OpenSSL, not in
         * the socket: drain them before waiting. */
        if (SSL_pending(ssl) == 0 && !SSL_has_pending(ssl)) {
            pfd[0].fd = client;
            pfd[0].events = POLLIN;
            pfd[1].fd = backend;
            pfd[1].events = POLLIN;
            if (poll(pfd, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                return;
            }
        } else {
            pfd[0].revents = POLLIN;
            pfd[1].revents = 0;
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int n = SSL_read(ssl, buf, sizeof buf);
            if (n <= 0)
                return;
            if (write_all(backend, buf, (size_t)n) < 0)
                return;
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(backend, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return;
            if (ssl_write_all(ssl, buf, (size_t)n) < 0)
                return;
        }
    }
}

static void *serve(void *arg)
{
    struct conn *c = arg;
    int client = c->client;
    free(c);
    SSL *ssl = SSL_new(ctx);
    if (ssl != NULL && SSL_set_fd(ssl, client) == 1 && SSL_accept(ssl) == 1) {
        int backend = connect_backend();
        if (backend >= 0) {
            relay(ssl, client, backend);
            close(backend);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(client);
    ERR_clear_error();
    return NULL;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    int one = 1;
    if (argc != 5) {
        fprintf(stderr, "usage: tls-front CERT KEY LISTEN_PORT BACKEND_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    backend_port = atoi(argv[4]);
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1
        || SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_read_ahead(ctx, 1);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[3]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1000) < 0) {
        perror("tls-front: listen");
        return 1;
    }
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            perror("tls-front: accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        pthread_t t;
        pthread_attr_t attr;
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->client = fd;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, serve, c) != 0) {
            close(fd);
            free(c);
        }
        pthread_attr_destroy(&attr);
    }
}
