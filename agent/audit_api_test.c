/* audit_api_test.c: PutAuditEvents: partial success, CloudTrail Lake's error
 * codes and limits, the checksum, and eventIDs that do not change on retry.
 * Each test gets a fresh spool in its own temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "audit_api.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define CHANNEL "arn:aws:cloudtrail:us-east-1:111122223333:channel/abc"
#define RECORD  "{\"eventName\":\"PutWidget\",\"eventSource\":\"widgets.example.com\"}"
/* printf %s RECORD | openssl dgst -binary -sha256 | base64 */
#define RECORD_SHA256_B64 "296CT3ktzJCPO1G/oNp0N5Zz7XTWxAapn7qLdmklmuA="
#define RECORD_SHA256_HEX "dbde824f792dcc908f3b51bfa0da74379673ed74d6c406a99fba8b7669259ae0"
/* python3: uuid from SHA-256(CHANNEL "\n" "evt-1")[:16], version 5, variant 10 */
#define EVT1_EVENT_ID "808c15f9-d006-5f54-a103-0dae780bff37"

typedef struct {
    char *dir;
    spool_t *spool;
    audit_api_t *api;
    cairn_http_response_t response;
    audit_api_outcome_t outcome;
    yajl_val answer; /* parsed response body */
    audit_api_filter_fn *filter; /* given with each call, or NULL */
} fixture_t;

typedef struct {
    const char *id;
    const char *data;
    const char *checksum; /* NULL: none */
} audit_event_t;

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->dir = strdup("/tmp/cairn-audit-api-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->spool = spool_new(f->dir, 64 << 20, false);
    assert_non_null(f->spool);
    event_defaults_t defaults = {"us-east-1", "111122223333"};
    f->api = audit_api_new(&defaults);
    assert_non_null(f->api);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    yajl_tree_free(f->answer);
    free(f->response.body);
    audit_api_destroy(&f->api);
    assert_null(f->api);
    spool_destroy(&f->spool);
    nftw(f->dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(f->dir);
    free(f);
    return 0;
}

/* {"auditEvents":[...]} with Python's separators, as the AWS CLI sends it. */
static char *s_body(const audit_event_t *events, size_t count)
{
    yajl_gen gen = yajl_gen_alloc(NULL);
    yajl_gen_map_open(gen);
    yajl_gen_string(gen, (const unsigned char *)"auditEvents", 11);
    yajl_gen_array_open(gen);
    for (size_t i = 0; i < count; i++) {
        yajl_gen_map_open(gen);
        yajl_gen_string(gen, (const unsigned char *)"id", 2);
        yajl_gen_string(gen, (const unsigned char *)events[i].id, strlen(events[i].id));
        yajl_gen_string(gen, (const unsigned char *)"eventData", 9);
        yajl_gen_string(gen, (const unsigned char *)events[i].data, strlen(events[i].data));
        if (events[i].checksum) {
            yajl_gen_string(gen, (const unsigned char *)"eventDataChecksum", 17);
            yajl_gen_string(gen, (const unsigned char *)events[i].checksum,
                            strlen(events[i].checksum));
        }
        yajl_gen_map_close(gen);
    }
    yajl_gen_array_close(gen);
    yajl_gen_map_close(gen);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(gen, &buf, &len);
    char *body = strndup((const char *)buf, len);
    yajl_gen_free(gen);
    return body;
}

/* Calls PutAuditEvents; parses the answer into f->answer. Returns the status. */
static int s_call_raw(fixture_t *f, const char *channel, const char *external_id, const char *body,
                      size_t len)
{
    yajl_tree_free(f->answer);
    free(f->response.body);
    memset(&f->response, 0, sizeof f->response);
    audit_api_request_t request = {channel, external_id, body, len, f->filter, NULL};
    audit_api_put_audit_events(f->api, f->spool, &request, &f->response, &f->outcome);
    char err[256];
    f->answer = yajl_tree_parse(f->response.body, err, sizeof err);
    if (!f->answer)
        fail_msg("answer is not JSON (%s): %s", err, f->response.body);
    return f->response.status;
}

static int s_call(fixture_t *f, const audit_event_t *events, size_t count)
{
    char *body = s_body(events, count);
    int status = s_call_raw(f, CHANNEL, NULL, body, strlen(body));
    free(body);
    return status;
}

static const char *s_get(yajl_val obj, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v ? YAJL_GET_STRING(v) : NULL;
}

static yajl_val s_array(fixture_t *f, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(f->answer, path, yajl_t_array);
    assert_non_null(v);
    return v;
}

/* The failed entry for id, or fails the test. */
static yajl_val s_failed(fixture_t *f, const char *id)
{
    yajl_val failed = s_array(f, "failed");
    for (size_t i = 0; i < failed->u.array.len; i++)
        if (strcmp(s_get(failed->u.array.values[i], "id"), id) == 0)
            return failed->u.array.values[i];
    fail_msg("%s is not in failed: %s", id, f->response.body);
    return NULL;
}

static void s_expect_failed(fixture_t *f, const char *id, const char *code, const char *in_message)
{
    yajl_val entry = s_failed(f, id);
    assert_string_equal(s_get(entry, "errorCode"), code);
    const char *message = s_get(entry, "errorMessage");
    if (!strstr(message, in_message))
        fail_msg("errorMessage of %s \"%s\" lacks \"%s\"", id, message, in_message);
}

static void s_expect_error(fixture_t *f, int status, const char *type, const char *in_message)
{
    assert_int_equal(f->response.status, status);
    assert_true(f->outcome.is_rejected);
    assert_string_equal(s_get(f->answer, "__type"), type);
    const char *message = s_get(f->answer, "message");
    if (!strstr(message, in_message))
        fail_msg("message \"%s\" lacks \"%s\"", message, in_message);
}

/* The spooled events, in order. */
typedef struct {
    char event_ids[128][40];
    char json[128][1024];
    size_t count;
} spooled_t;

static int s_collect(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    spooled_t *s = ctx;
    Cairn__Event *event = cairn__event__unpack(NULL, len, data);
    assert_non_null(event);
    snprintf(s->event_ids[s->count], sizeof s->event_ids[0], "%s", event->event_id);
    snprintf(s->json[s->count], sizeof s->json[0], "%.*s", (int)event->json.len,
             (const char *)event->json.data);
    s->count++;
    cairn__event__free_unpacked(event, NULL);
    return 0;
}

static void s_read_spool(fixture_t *f, spooled_t *s)
{
    memset(s, 0, sizeof *s);
    assert_true(spool_read(f->spool, 1, 128, 64 << 20, s_collect, s) >= 0);
}

/* Keeps every event but those from kms.amazonaws.com. */
static bool s_drop_kms(void *ctx, const Cairn__Event *event)
{
    return strcmp(event->event_source, "kms.amazonaws.com") != 0;
}

static void filtered_events_succeed_without_being_spooled(void **state)
{
    fixture_t *f = *state;
    f->filter = s_drop_kms;
    audit_event_t events[] = {
        {"evt-1", RECORD, NULL},
        {"evt-2", "{\"eventName\":\"Decrypt\",\"eventSource\":\"kms.amazonaws.com\"}", NULL},
        {"evt-3", "{\"eventName\":\"Decrypt\"}", NULL},
    };
    assert_int_equal(s_call(f, events, 3), 200);
    assert_int_equal(f->outcome.accepted_count, 1);
    assert_int_equal(f->outcome.filtered_count, 1);
    assert_int_equal(f->outcome.failed_count, 1);
    /* As in CloudTrail Lake: the call took the event; the selectors dropped it. */
    yajl_val ok = s_array(f, "successful");
    assert_int_equal(ok->u.array.len, 2);
    assert_string_equal(s_get(ok->u.array.values[1], "id"), "evt-2");
    char expected[37];
    audit_api_event_id(CHANNEL, "evt-2", expected);
    assert_string_equal(s_get(ok->u.array.values[1], "eventID"), expected);
    assert_int_equal(s_array(f, "failed")->u.array.len, 1);
    spooled_t spooled;
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 1);
    audit_api_event_id(CHANNEL, "evt-1", expected);
    assert_string_equal(spooled.event_ids[0], expected);

    /* Everything filtered: 200, nothing spooled. */
    assert_int_equal(s_call(f, events + 1, 1), 200);
    assert_int_equal(f->outcome.accepted_count, 0);
    assert_int_equal(f->outcome.filtered_count, 1);
    assert_int_equal(s_array(f, "successful")->u.array.len, 1);
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 1);
}

static void event_ids_are_derived_from_channel_and_id(void **state)
{
    char a[37], b[37], c[37];
    audit_api_event_id(CHANNEL, "evt-1", a);
    assert_string_equal(a, EVT1_EVENT_ID);
    audit_api_event_id(CHANNEL, "evt-2", b);
    audit_api_event_id("arn:aws:cloudtrail:us-east-1:111122223333:channel/other", "evt-1", c);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, c);
}

static void good_events_are_spooled_once_per_call_with_stable_ids(void **state)
{
    fixture_t *f = *state;
    audit_event_t events[] = {
        {"evt-1", RECORD, RECORD_SHA256_B64},
        {"evt-2",
         "{\"eventName\":\"GetWidget\",\"eventSource\":\"widgets.example.com\","
         "\"readOnly\":true,\"eventTime\":\"2026-11-24T11:24:54Z\"}",
         NULL},
        {"evt_3", "  {  \"eventSource\" : \"a.example.com\", \"eventName\" : \"X\" }  ", NULL},
    };
    assert_int_equal(s_call(f, events, 3), 200);
    assert_int_equal(f->outcome.accepted_count, 3);
    assert_int_equal(f->outcome.failed_count, 0);
    assert_int_equal(s_array(f, "failed")->u.array.len, 0);
    yajl_val ok = s_array(f, "successful");
    assert_int_equal(ok->u.array.len, 3);
    for (size_t i = 0; i < 3; i++) {
        char expected[37];
        audit_api_event_id(CHANNEL, events[i].id, expected);
        assert_string_equal(s_get(ok->u.array.values[i], "id"), events[i].id);
        assert_string_equal(s_get(ok->u.array.values[i], "eventID"), expected);
    }
    spooled_t spooled;
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 3);
    assert_string_equal(spooled.event_ids[0], EVT1_EVENT_ID);
    /* The record as given, after the eventID, then the agent's fills. */
    const char *head = "{\"eventID\":\"" EVT1_EVENT_ID "\",\"eventName\":\"PutWidget\","
                       "\"eventSource\":\"widgets.example.com\",\"eventVersion\":\"1.11\",";
    if (strncmp(spooled.json[0], head, strlen(head)) != 0)
        fail_msg("spooled record %s does not start with %s", spooled.json[0], head);
    assert_non_null(strstr(spooled.json[0], "\"awsRegion\":\"us-east-1\""));
    assert_non_null(strstr(spooled.json[0], "\"recipientAccountId\":\"111122223333\""));
    assert_non_null(strstr(spooled.json[1], "\"readOnly\":true"));
    assert_non_null(strstr(spooled.json[1], "\"eventTime\":\"2026-11-24T11:24:54Z\""));

    /* A retry of the same call: the same eventIDs (the aggregator keeps one
     * copy of each); the spool gets them again, as for any resend. */
    assert_int_equal(s_call(f, events, 3), 200);
    ok = s_array(f, "successful");
    assert_string_equal(s_get(ok->u.array.values[0], "eventID"), EVT1_EVENT_ID);
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 6);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(spooled.event_ids[i], spooled.event_ids[i + 3]);
}

static void bad_events_fail_alone_with_lake_error_codes(void **state)
{
    fixture_t *f = *state;
    audit_event_t events[] = {
        {"good", RECORD, NULL},
        {"bad-checksum", RECORD, "AAAACT3ktzJCPO1G/oNp0N5Zz7XTWxAapn7qLdmklmuA="},
        {"hex-checksum", RECORD, RECORD_SHA256_HEX},
        {"no-name", "{\"eventSource\":\"widgets.example.com\"}", NULL},
        {"empty", "{}", NULL},
        {"not-json", "{\"eventName\":\"A\",\"eventSource\":\"b\",}", NULL},
        {"not-object", "[1,2]", NULL},
        {"own-id", "{\"eventID\":\"mine\",\"eventName\":\"A\",\"eventSource\":\"b\"}", NULL},
        {"bad-time", "{\"eventName\":\"A\",\"eventSource\":\"b\",\"eventTime\":\"yesterday\"}",
         NULL},
        {"other-account",
         "{\"eventName\":\"A\",\"eventSource\":\"b\",\"recipientAccountId\":\"444455556666\"}",
         NULL},
        {"good-2",
         "{\"eventName\":\"B\",\"eventSource\":\"b\",\"recipientAccountId\":"
         "\"111122223333\"}",
         NULL},
    };
    size_t count = sizeof events / sizeof *events;
    assert_int_equal(s_call(f, events, count), 200);
    assert_int_equal(f->outcome.accepted_count, 2);
    assert_int_equal(f->outcome.failed_count, count - 2);
    assert_int_equal(s_array(f, "successful")->u.array.len, 2);
    assert_string_equal(s_get(s_array(f, "successful")->u.array.values[1], "id"), "good-2");
    s_expect_failed(f, "bad-checksum", "InvalidChecksum", "base64 SHA-256");
    s_expect_failed(f, "hex-checksum", "InvalidChecksum", "");
    s_expect_failed(f, "no-name", "FieldNotFound", "eventName");
    s_expect_failed(f, "empty", "FieldNotFound", "eventName");
    /* The byte offset is eventData's own. */
    s_expect_failed(f, "not-json", "InvalidData", "eventData is not valid JSON at byte 36: ");
    s_expect_failed(f, "not-object", "InvalidData", "not a JSON object");
    s_expect_failed(f, "own-id", "InvalidData", "must not have an eventID");
    s_expect_failed(f, "bad-time", "InvalidData", "eventTime");
    s_expect_failed(f, "other-account", "InvalidRecipient", "444455556666");
    spooled_t spooled;
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 2);

    /* Nothing good at all: 200, everything in failed, nothing spooled. */
    assert_int_equal(s_call(f, &events[3], 1), 200);
    assert_int_equal(s_array(f, "successful")->u.array.len, 0);
    s_expect_failed(f, "no-name", "FieldNotFound", "eventName");
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 2);
}

static void s_expect_rejected_body(fixture_t *f, const char *body, int status, const char *type,
                                   const char *in_message)
{
    s_call_raw(f, CHANNEL, NULL, body, strlen(body));
    s_expect_error(f, status, type, in_message);
}

static void whole_request_errors_store_nothing(void **state)
{
    fixture_t *f = *state;
    s_expect_rejected_body(f, "{\"auditEvents\": [", 400, "ValidationException", "not valid JSON");
    s_expect_rejected_body(f, "", 400, "ValidationException", "");
    s_expect_rejected_body(f, "[]", 400, "ValidationException", "must be a JSON object");
    s_expect_rejected_body(f, "{}", 400, "ValidationException", "no auditEvents");
    s_expect_rejected_body(f, "{\"auditEvents\": []}", 400, "ValidationException", "1 to 100");
    s_expect_rejected_body(f, "{\"auditEvents\": {}}", 400, "ValidationException",
                           "must be an array");
    s_expect_rejected_body(f, "{\"auditEvents\": [], \"x\": 1}", 400, "ValidationException",
                           "unknown field \"x\"");
    s_expect_rejected_body(f, "{\"auditEvents\": [{\"id\": \"a\", \"eventData\": {}}]}", 400,
                           "ValidationException", "auditEvents[0].eventData must be a string");
    s_expect_rejected_body(f, "{\"auditEvents\": [{\"id\": \"a\"}]}", 400, "ValidationException",
                           "no eventData");
    s_expect_rejected_body(f, "{\"auditEvents\": [{\"eventData\": \"{}\"}]}", 400,
                           "ValidationException", "has no id");
    s_expect_rejected_body(f, "{\"auditEvents\": [{\"id\": \"a b\", \"eventData\": \"{}\"}]}", 400,
                           "ValidationException", "1 to 128 characters");
    s_expect_rejected_body(f, "{\"auditEvents\": [{\"id\": \"a\", \"id\": \"b\"}]}", 400,
                           "ValidationException", "id is given twice");
    s_expect_rejected_body(f,
                           "{\"auditEvents\": [{\"id\": \"a\", \"eventData\": \"{}\", "
                           "\"extra\": \"\"}]}",
                           400, "ValidationException", "unknown field \"extra\"");

    /* 100,000 opening brackets: refused at the first, no deep recursion. */
    char *deep = malloc(100001);
    memset(deep, '[', 100000);
    deep[100000] = '\0';
    s_expect_rejected_body(f, deep, 400, "ValidationException", "found an array");
    free(deep);

    audit_event_t dup[] = {{"same", RECORD, NULL}, {"other", RECORD, NULL}, {"same", RECORD, NULL}};
    assert_int_equal(s_call(f, dup, 3), 400);
    s_expect_error(f, 400, "DuplicatedAuditEventId", "same");

    char long_id[AUDIT_API_MAX_ID_BYTES + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    audit_event_t too_long[] = {{long_id, RECORD, NULL}};
    assert_int_equal(s_call(f, too_long, 1), 400);
    long_id[AUDIT_API_MAX_ID_BYTES] = '\0';
    assert_int_equal(s_call(f, too_long, 1), 200); /* exactly 128 is fine */

    audit_event_t many[AUDIT_API_MAX_EVENTS + 1];
    char ids[AUDIT_API_MAX_EVENTS + 1][8];
    for (size_t i = 0; i <= AUDIT_API_MAX_EVENTS; i++) {
        snprintf(ids[i], sizeof ids[i], "e%zu", i);
        many[i] = (audit_event_t){ids[i], RECORD, NULL};
    }
    assert_int_equal(s_call(f, many, AUDIT_API_MAX_EVENTS + 1), 400);
    s_expect_error(f, 400, "ValidationException", "more than 100 events");

    char *big = malloc(AUDIT_API_MAX_BODY_BYTES + 2);
    memset(big, ' ', AUDIT_API_MAX_BODY_BYTES + 1);
    big[AUDIT_API_MAX_BODY_BYTES + 1] = '\0';
    s_expect_rejected_body(f, big, 413, "ValidationException", "1048576-byte limit");
    free(big);

    spooled_t spooled;
    s_read_spool(f, &spooled);
    assert_int_equal(spooled.count, 1); /* only the 128-character id */

    /* 100 events is the limit, not over it. */
    assert_int_equal(s_call(f, many, AUDIT_API_MAX_EVENTS), 200);
    assert_int_equal(f->outcome.accepted_count, AUDIT_API_MAX_EVENTS);
}

static void channel_and_external_id_are_checked(void **state)
{
    fixture_t *f = *state;
    char *body = s_body(&(audit_event_t){"evt-1", RECORD, NULL}, 1);
    size_t len = strlen(body);
    s_call_raw(f, NULL, NULL, body, len);
    s_expect_error(f, 400, "ValidationException", "channelArn");
    const char *bad[] = {"arn:aws:s3:::bucket", "arn:aws:cloudtrail:us-east-1:1234:channel/x",
                         "arn:aws:cloudtrail:us-east-1:111122223333:trail/x", "not an arn",
                         "arn:aws:cloudtrail:us-east-1:111122223333:channel/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_call_raw(f, bad[i], NULL, body, len);
        s_expect_error(f, 400, "InvalidChannelARN", "");
    }
    s_call_raw(f, CHANNEL, "x", body, len);
    s_expect_error(f, 400, "ValidationException", "externalId");
    s_call_raw(f, CHANNEL, "ext id", body, len);
    s_expect_error(f, 400, "ValidationException", "externalId");

    assert_int_equal(s_call_raw(f, CHANNEL, "partner@example.com:42", body, len), 200);
    /* A bare channel ID, and an ARN without an account, are accepted. */
    assert_int_equal(s_call_raw(f, "abc", NULL, body, len), 200);
    assert_int_equal(s_call_raw(f, "arn:aws:cloudtrail:us-east-1::channel/abc", NULL, body, len),
                     200);
    /* The eventID belongs to the channel as sent. */
    char expected[37];
    audit_api_event_id("abc", "evt-1", expected);
    s_call_raw(f, "abc", NULL, body, len);
    assert_string_equal(s_get(s_array(f, "successful")->u.array.values[0], "eventID"), expected);
    assert_string_not_equal(expected, EVT1_EVENT_ID);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(event_ids_are_derived_from_channel_and_id),
        cmocka_unit_test_setup_teardown(good_events_are_spooled_once_per_call_with_stable_ids,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(bad_events_fail_alone_with_lake_error_codes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(whole_request_errors_store_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(channel_and_external_id_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(filtered_events_succeed_without_being_spooled, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
