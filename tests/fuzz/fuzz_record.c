/* fuzz_record.c: libFuzzer target for the agent's CloudTrail record parser,
 * fed whole request bodies (one record, an array, or {"Records":[...]}). */
#include "event.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int s_count(void *ctx, size_t index, const Cairn__Event *event)
{
    /* Packing touches every field the parser filled. */
    uint8_t buf[4096];
    if (cairn__event__get_packed_size(event) <= sizeof buf)
        cairn__event__pack(event, buf);
    (*(size_t *)ctx)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static event_parser_t *parser;
    if (!parser)
        parser = event_parser_new(
            &(event_defaults_t){.region = "us-east-1", .account_id = "111122223333"});
    size_t count = 0;
    char err[512];
    (void)event_parser_parse_body(parser, (const char *)data, size, s_count, &count, err,
                                  sizeof err);
    return 0;
}
