/* cairn_wire.h: protobuf's wire format, for the few places that must read or
 * write a field without protobuf-c unpacking or packing a whole message
 * (protobuf-c has no API for one field): the store reading an event's
 * ingest time, delivery reading account, region and record, the shipper
 * framing spooled events into a Batch. */
#ifndef CAIRN_WIRE_H
#define CAIRN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define CAIRN_WIRE_VARINT 0
#define CAIRN_WIRE_BYTES  2 /* length-delimited: strings, bytes, messages */

/* One field of a packed message. */
typedef struct {
    uint32_t number;     /* field number */
    int wire_type;       /* CAIRN_WIRE_VARINT, CAIRN_WIRE_BYTES, 1 or 5 */
    uint64_t varint;     /* the value, for CAIRN_WIRE_VARINT */
    const uint8_t *data; /* the bytes, for CAIRN_WIRE_BYTES (borrowed) */
    size_t len;
} cairn_wire_field_t;

/* Reads the field at *at of the message p[0..len) and moves *at past it.
 * Returns 1 with *field set, 0 at the end of the message, -1 if the bytes
 * are not a well-formed message. */
int cairn_wire_next(const uint8_t *p, size_t len, size_t *at, cairn_wire_field_t *field);

/* Writes v as a varint into out (10 bytes at most); returns its length. */
size_t cairn_wire_put_varint(uint64_t v, uint8_t *out);

#endif
