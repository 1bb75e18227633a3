/* fuzz_put_audit_events.c: libFuzzer target for the agent's PutAuditEvents
 * handler: the request body as a client sends it, through parsing, per-event
 * checks, the spool append and the JSON answer. The spool is a real LMDB
 * environment in a temporary directory, emptied after every input. */
#include "audit_api.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static audit_api_t *api;
    static spool_t *spool;
    if (!api) {
        char dir[] = "/tmp/cairn-fuzz-pae-XXXXXX";
        if (!mkdtemp(dir))
            abort();
        spool = spool_new(dir, 256 << 20, false);
        api = audit_api_new(&(event_defaults_t){.region = "us-east-1",
                                                .account_id = "123456789012"});
        if (!spool || !api)
            abort();
    }
    /* The HTTP layer hands the handler a NUL-terminated body. */
    char *body = malloc(size + 1);
    memcpy(body, data, size);
    body[size] = '\0';
    audit_api_request_t call = {"arn:aws:cloudtrail:us-east-1:123456789012:channel/fuzz", NULL,
                                body, size, NULL, NULL};
    cairn_http_response_t response = {.status = 200};
    audit_api_outcome_t outcome;
    audit_api_put_audit_events(api, spool, &call, &response, &outcome);
    free(response.body);
    free(body);
    spool_ack_through(spool, spool_next_seq(spool) - 1);
    return 0;
}
