/* cairn_net.h: small network helpers shared by both daemons. */
#ifndef CAIRN_NET_H
#define CAIRN_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Parses "HOST:PORT" or "[V6]:PORT" into a socket address for bind. HOST
 * may be a numeric address, "*" or "0.0.0.0" (any), or "localhost".
 * Returns 0, or -1 with the reason in err. */
int cairn_net_parse_listen(const char *text, struct sockaddr_storage *addr, socklen_t *len,
                           char *err, size_t errlen);

#endif
