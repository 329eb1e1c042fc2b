/*
 * floor.c - the least a thread-per-session SMTP client with blocking I/O
 * can do: S threads, each with one connection to HOST:PORT, send M
 * messages of L bytes over it, PIPELINING MAIL/RCPT/DATA in one write
 * and the body with the final dot in a second write, waiting for the
 * replies with blocking reads (two waits per message, as mailhop on a
 * cached session). No job protocol, no files, no logging, no per-recipient
 * bookkeeping: the lower bound for mailhop's design (a worker thread per
 * delivery, blocking sockets) on this machine, measured next to
 * smtp-source in scenario 1.
 *
 * With -n, every message gets a new connection (greeting, EHLO, the
 * pipelined transaction, QUIT behind the final dot: four waits, as mailhop
 * without the connection cache), to compare with "smtp-source" in
 * scenario 2.
 *
 * The harness runs it under SCHED_BATCH ("chrt -b 0"), as mailhop's
 * threads run by default ([daemon] batch_scheduling).
 *
 * Usage: floor [-n] -s SESSIONS -m MESSAGES -l LENGTH HOST:PORT
 * Prints one line: messages seconds cpu_seconds maxrss_kb context_switches
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in server;
static long per_thread, extra, length;
static int new_connection_per_message;
static char *body;
static size_t body_len;

struct conn { int fd; char buf[8192]; size_t have; };

/* Reads until `replies` complete replies (final lines) arrived; returns
 * the number of replies that were not 2xx/3xx, or -1 on EOF/error. */
static int replies(struct conn *c, int want)
{
	int bad = 0;
	while (want > 0) {
		char *nl;
		while ((nl = memchr(c->buf, '\n', c->have)) == NULL) {
			ssize_t n = read(c->fd, c->buf + c->have, sizeof(c->buf) - c->have);
			if (n <= 0)
				return -1;
			c->have += (size_t)n;
		}
		size_t line = (size_t)(nl - c->buf) + 1;
		if (line >= 4 && c->buf[3] == ' ') {
			if (c->buf[0] != '2' && c->buf[0] != '3')
				bad++;
			want--;
		}
		memmove(c->buf, c->buf + line, c->have - line);
		c->have -= line;
	}
	return bad;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int open_session(struct conn *c)
{
	c->have = 0;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&server, sizeof(server)) < 0)
		return -1;
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (replies(c, 1) != 0 || send_all(c->fd, "EHLO floor.test\r\n", 17) || replies(c, 1) != 0)
		return -1;
	return 0;
}

static void *session(void *arg)
{
	long count = per_thread + ((long)(intptr_t)arg < extra ? 1 : 0);
	struct conn *c = calloc(1, sizeof(*c));
	static const char cmds[] = "MAIL FROM:<floor@example.test>\r\n"
	                           "RCPT TO:<sink@example.test>\r\nDATA\r\n";
	if (!c)
		return (void *)1;
	if (!new_connection_per_message && open_session(c))
		return (void *)1;
	for (long i = 0; i < count; i++) {
		if (new_connection_per_message && open_session(c))
			return (void *)1;
		if (send_all(c->fd, cmds, sizeof(cmds) - 1) || replies(c, 3) != 0)
			return (void *)1;
		/* Without reuse, QUIT rides behind the final dot. */
		size_t n = body_len + (new_connection_per_message ? 6 : 0);
		if (send_all(c->fd, body, n) || replies(c, 1) != 0)
			return (void *)1;
		if (new_connection_per_message)
			close(c->fd);
	}
	if (!new_connection_per_message) {
		send_all(c->fd, "QUIT\r\n", 6);
		close(c->fd);
	}
	free(c);
	return NULL;
}

int main(int argc, char **argv)
{
	long sessions = 20, messages = 20000;
	int opt;
	length = 1024;
	while ((opt = getopt(argc, argv, "ns:m:l:")) != -1) {
		switch (opt) {
		case 'n': new_connection_per_message = 1; break;
		case 's': sessions = atol(optarg); break;
		case 'm': messages = atol(optarg); break;
		case 'l': length = atol(optarg); break;
		default: fprintf(stderr, "usage: floor -s S -m M -l L HOST:PORT\n"); return 64;
		}
	}
	if (optind >= argc || sessions < 1 || messages < 1 || length < 1) {
		fprintf(stderr, "usage: floor -s S -m M -l L HOST:PORT\n");
		return 64;
	}
	char *host = strdup(argv[optind]);
	char *colon = host ? strrchr(host, ':') : NULL;
	if (!colon)
		return 64;
	*colon = '\0';
	server.sin_family = AF_INET;
	server.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &server.sin_addr) != 1)
		return 64;
	/* Body: lines of 78 'x' plus CRLF, then ".\r\n". */
	body = malloc((size_t)length + 128);
	if (!body)
		return 70;
	for (long i = 0; i < length; i++)
		body[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : 'x';
	body_len = (size_t)length;
	memcpy(body + body_len, "\r\n.\r\nQUIT\r\n", 11);
	body_len += 5; /* QUIT: the 6 bytes after, sent only with -n */
	per_thread = messages / sessions;
	extra = messages % sessions;
	pthread_t *threads = calloc((size_t)sessions, sizeof(pthread_t));
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < sessions; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&threads[i], &attr, session, (void *)(intptr_t)i) != 0)
			return 71;
	}
	int failed = 0;
	for (long i = 0; i < sessions; i++) {
		void *rv;
		pthread_join(threads[i], &rv);
		failed |= rv != NULL;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	printf("%ld %.6f %.6f %ld %ld\n", messages, secs, cpu, ru.ru_maxrss, ru.ru_nvcsw + ru.ru_nivcsw);
	return failed ? 1 : 0;
}
