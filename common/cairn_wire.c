/* cairn_wire.c: protobuf wire format, one field at a time (see cairn_wire.h). */
#include "cairn_wire.h"

static int s_varint(const uint8_t *p, size_t len, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *at < len; shift += 7) {
        uint8_t b = p[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

int cairn_wire_next(const uint8_t *p, size_t len, size_t *at, cairn_wire_field_t *field)
{
    if (*at >= len)
        return 0;
    uint64_t tag, skip = 0;
    if (s_varint(p, len, at, &tag) != 0)
        return -1;
    field->number = (uint32_t)(tag >> 3);
    field->wire_type = (int)(tag & 7);
    field->data = NULL;
    field->len = 0;
    switch (field->wire_type) {
    case CAIRN_WIRE_VARINT:
        return s_varint(p, len, at, &field->varint) == 0 ? 1 : -1;
    case 1: /* fixed64 */
        skip = 8;
        break;
    case CAIRN_WIRE_BYTES:
        if (s_varint(p, len, at, &skip) != 0 || skip > len - *at)
            return -1;
        field->data = p + *at;
        field->len = (size_t)skip;
        break;
    case 5: /* fixed32 */
        skip = 4;
        break;
    default:
        return -1;
    }
    if (skip > len - *at)
        return -1;
    *at += (size_t)skip;
    return 1;
}

size_t cairn_wire_put_varint(uint64_t v, uint8_t *out)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}
