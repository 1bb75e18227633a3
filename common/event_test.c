/* event_test.c: CloudTrail records into Events, bodies into records, errors and allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cairn_mem.h"
#include "cairn_time.h"
#include "event.h"

/* Section 1.4 of the CloudTrail reference: an AssumedRole RunInstances. */
static const char RUN_INSTANCES[] =
    "{\n"
    "  \"eventVersion\": \"1.11\",\n"
    "  \"userIdentity\": {\"type\": \"AssumedRole\",\n"
    "    \"principalId\": \"AROAEXAMPLEROLEID0001:ci-deploy\",\n"
    "    \"arn\": \"arn:aws:sts::111122223333:assumed-role/DeployRole/ci-deploy\",\n"
    "    \"accountId\": \"111122223333\", \"accessKeyId\": \"ASIAEXAMPLEKEY000001\",\n"
    "    \"sessionContext\": {\n"
    "      \"sessionIssuer\": {\"type\": \"Role\", \"principalId\": \"AROAEXAMPLEROLEID0001\",\n"
    "        \"arn\": \"arn:aws:iam::111122223333:role/DeployRole\",\n"
    "        \"accountId\": \"111122223333\", \"userName\": \"DeployRole\"},\n"
    "      \"webIdFederationData\": {},\n"
    "      \"attributes\": {\"creationDate\": \"2025-03-04T09:58:11Z\", \"mfaAuthenticated\": "
    "\"false\"}}},\n"
    "  \"eventTime\": \"2025-03-04T10:02:37Z\", \"eventSource\": \"ec2.amazonaws.com\",\n"
    "  \"eventName\": \"RunInstances\", \"awsRegion\": \"eu-west-1\", \"sourceIPAddress\": "
    "\"198.51.100.23\",\n"
    "  \"userAgent\": \"aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0 exe/x86_64.debian.12\",\n"
    "  \"requestParameters\": {\"instanceType\": \"t3.micro\", \"subnetId\": "
    "\"subnet-0123456789abcdef0\",\n"
    "    \"instancesSet\": {\"items\": [{\"imageId\": \"ami-0abcdef1234567890\", \"minCount\": 1, "
    "\"maxCount\": 1}]}},\n"
    "  \"responseElements\": {\"requestId\": \"6a2f0c4e-8b1d-4f5a-9e3c-7d2b1a0f9e88\",\n"
    "    \"reservationId\": \"r-0a1b2c3d4e5f67890\", \"ownerId\": \"111122223333\",\n"
    "    \"instancesSet\": {\"items\": [{\"instanceId\": \"i-0fedcba9876543210\", \"imageId\": "
    "\"ami-0abcdef1234567890\"}]}},\n"
    "  \"requestID\": \"6a2f0c4e-8b1d-4f5a-9e3c-7d2b1a0f9e88\",\n"
    "  \"eventID\": \"c0d4e2b8-1a3f-4b6c-8d9e-2f7a5b3c1e04\",\n"
    "  \"readOnly\": false, \"eventType\": \"AwsApiCall\", \"managementEvent\": true,\n"
    "  \"recipientAccountId\": \"111122223333\", \"eventCategory\": \"Management\",\n"
    "  \"tlsDetails\": {\"tlsVersion\": \"TLSv1.3\", \"cipherSuite\": "
    "\"TLS_AES_128_GCM_SHA256\",\n"
    "                 \"clientProvidedHostHeader\": \"ec2.eu-west-1.amazonaws.com\"}}";

/* Section 1.4: a failed console sign-in. */
static const char CONSOLE_LOGIN[] =
    "{\"eventVersion\": \"1.11\", \"userIdentity\": {\"type\": \"IAMUser\", \"principalId\": "
    "\"AIDAEXAMPLEUSER00001\",\n"
    "   \"accountId\": \"111122223333\", \"accessKeyId\": \"\", \"userName\": \"anaya\"},\n"
    " \"eventTime\": \"2025-03-04T08:15:02Z\", \"eventSource\": \"signin.amazonaws.com\", "
    "\"eventName\": \"ConsoleLogin\",\n"
    " \"awsRegion\": \"us-east-1\", \"sourceIPAddress\": \"203.0.113.7\", \"userAgent\": "
    "\"Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0\",\n"
    " \"errorMessage\": \"Failed authentication\", \"requestParameters\": null, "
    "\"responseElements\": {\"ConsoleLogin\": \"Failure\"},\n"
    " \"additionalEventData\": {\"LoginTo\": \"https://console.aws.amazon.com/\", "
    "\"MobileVersion\": \"No\", \"MFAUsed\": \"No\"},\n"
    " \"eventID\": \"0b6f3c1e-5d2a-4e8b-9c7d-1a2b3c4d5e6f\", \"readOnly\": false, \"eventType\": "
    "\"AwsConsoleSignIn\",\n"
    " \"managementEvent\": true, \"recipientAccountId\": \"111122223333\", \"eventCategory\": "
    "\"Management\"}";

#define MINIMAL "{\"eventName\":\"GetObject\",\"eventSource\":\"s3.amazonaws.com\"}"

/* A complete record (nothing filled), named, for bodies. */
#define RECORD(name)                                                                               \
    "{\"eventVersion\":\"1.11\",\"eventID\":\"id-" name                                            \
    "\",\"eventTime\":\"2025-03-04T10:02:37Z\","                                                   \
    "\"eventName\":\"" name "\",\"eventSource\":\"s3.amazonaws.com\",\"awsRegion\":\"eu-west-1\"," \
    "\"eventType\":\"AwsApiCall\",\"recipientAccountId\":\"111122223333\"}"

static event_parser_t *new_parser(const char *account_id)
{
    event_defaults_t defaults = {.region = "eu-central-1", .account_id = account_id};
    event_parser_t *parser = event_parser_new(&defaults);
    assert_non_null(parser);
    return parser;
}

static int parse(event_parser_t *parser, const char *json, Cairn__Event *event, char *err,
                 size_t errlen)
{
    return event_parser_parse(parser, json, strlen(json), event, err, errlen);
}

/* The event's JSON as a NUL-terminated string (it is not one). */
static char *json_of(const Cairn__Event *event)
{
    char *copy = cairn_malloc(event->json.len + 1);
    memcpy(copy, event->json.data, event->json.len);
    copy[event->json.len] = '\0';
    return copy;
}

/* in without the whitespace outside strings. */
static char *compact(const char *in)
{
    char *out = cairn_malloc(strlen(in) + 1), *o = out;
    int in_string = 0;
    for (const char *p = in; *p; p++) {
        if (in_string && *p == '\\') {
            *o++ = *p++;
            *o++ = *p;
        } else if (*p == '"') {
            in_string = !in_string;
            *o++ = *p;
        } else if (in_string || (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r')) {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

static size_t count_of(const char *haystack, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static int is_uuid_v4(const char *s)
{
    int ok = strlen(s) == 36;
    for (int i = 0; ok && i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            ok = s[i] == '-';
        else
            ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    }
    return ok && s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static void run_instances_example_is_indexed_and_kept(void **state)
{
    event_parser_t *parser = new_parser("999988887777");
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser, RUN_INSTANCES, &ev, err, sizeof err), 0);
    assert_string_equal(ev.event_id, "c0d4e2b8-1a3f-4b6c-8d9e-2f7a5b3c1e04");
    assert_int_equal(ev.event_time_ms, 1741082557000LL);
    assert_string_equal(ev.event_name, "RunInstances");
    assert_string_equal(ev.event_source, "ec2.amazonaws.com");
    assert_string_equal(ev.aws_region, "eu-west-1");
    assert_string_equal(ev.recipient_account_id, "111122223333");
    assert_string_equal(ev.user_type, "AssumedRole");
    assert_string_equal(ev.user_arn, "arn:aws:sts::111122223333:assumed-role/DeployRole/ci-deploy");
    /* sessionIssuer.userName is two levels down: not the caller's name. */
    assert_string_equal(ev.user_name, "");
    assert_string_equal(ev.access_key_id, "ASIAEXAMPLEKEY000001");
    assert_int_equal(ev.read_only, CAIRN__READ_ONLY__READ_ONLY_FALSE);
    assert_int_equal(ev.n_resources, 0);
    assert_string_equal(ev.event_category, "Management");
    assert_true(ev.management_event);

    char *json = json_of(&ev), *expected = compact(RUN_INSTANCES);
    assert_string_equal(json, expected); /* complete: nothing appended, nothing doubled */
    assert_int_equal(count_of(json, "\"eventVersion\""), 1);
    assert_int_equal(count_of(json, "\"recipientAccountId\""), 1);
    free(json);
    free(expected);
    event_parser_destroy(&parser);
    assert_null(parser);
}

static void console_login_example_is_indexed_and_kept(void **state)
{
    event_parser_t *parser = new_parser("999988887777");
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser, CONSOLE_LOGIN, &ev, err, sizeof err), 0);
    assert_string_equal(ev.event_id, "0b6f3c1e-5d2a-4e8b-9c7d-1a2b3c4d5e6f");
    assert_int_equal(ev.event_time_ms, 1741076102000LL);
    assert_string_equal(ev.event_name, "ConsoleLogin");
    assert_string_equal(ev.event_source, "signin.amazonaws.com");
    assert_string_equal(ev.aws_region, "us-east-1");
    assert_string_equal(ev.recipient_account_id, "111122223333");
    assert_string_equal(ev.user_type, "IAMUser");
    assert_string_equal(ev.user_arn, "");
    assert_string_equal(ev.user_name, "anaya");
    assert_string_equal(ev.access_key_id, "");
    assert_int_equal(ev.read_only, CAIRN__READ_ONLY__READ_ONLY_FALSE);

    char *json = json_of(&ev), *expected = compact(CONSOLE_LOGIN);
    assert_string_equal(json, expected);
    assert_non_null(strstr(json, "\"requestParameters\":null"));
    assert_non_null(strstr(json, "\"LoginTo\":\"https://console.aws.amazon.com/\""));
    free(json);
    free(expected);
    event_parser_destroy(&parser);
}

static void minimal_record_is_filled_and_reparses(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    Cairn__Event ev;
    char err[256] = "";
    int64_t before_ms = cairn_time_now_ms();
    assert_int_equal(parse(parser, MINIMAL, &ev, err, sizeof err), 0);
    int64_t after_ms = cairn_time_now_ms();

    assert_true(is_uuid_v4(ev.event_id));
    assert_true(ev.event_time_ms > before_ms - 1000 && ev.event_time_ms <= after_ms);
    assert_int_equal(ev.event_time_ms % 1000, 0); /* as written: whole seconds */
    assert_string_equal(ev.aws_region, "eu-central-1");
    assert_string_equal(ev.recipient_account_id, "111122223333");
    assert_int_equal(ev.read_only, CAIRN__READ_ONLY__READ_ONLY_UNSET);

    char *json = json_of(&ev), time_text[21], expected[512];
    cairn_time_format_iso8601(ev.event_time_ms, time_text);
    snprintf(expected, sizeof expected,
             "{\"eventName\":\"GetObject\",\"eventSource\":\"s3.amazonaws.com\","
             "\"eventVersion\":\"1.11\",\"eventID\":\"%s\",\"eventTime\":\"%s\","
             "\"awsRegion\":\"eu-central-1\",\"eventType\":\"AwsApiCall\","
             "\"recipientAccountId\":\"111122223333\"}",
             ev.event_id, time_text);
    assert_string_equal(json, expected);

    /* The output is itself a complete record: nothing more is filled. */
    char id[37];
    int64_t time_ms = ev.event_time_ms;
    strcpy(id, ev.event_id);
    Cairn__Event again;
    assert_int_equal(parse(parser, json, &again, err, sizeof err), 0);
    assert_string_equal(again.event_id, id);
    assert_int_equal(again.event_time_ms, time_ms);
    assert_string_equal(again.event_name, "GetObject");
    assert_string_equal(again.event_source, "s3.amazonaws.com");
    assert_string_equal(again.aws_region, "eu-central-1");
    assert_string_equal(again.recipient_account_id, "111122223333");
    assert_int_equal(again.json.len, strlen(json));
    assert_memory_equal(again.json.data, json, strlen(json));
    free(json);
    event_parser_destroy(&parser);
}

static void empty_default_account_is_not_filled(void **state)
{
    event_parser_t *parser = new_parser(NULL);
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser, MINIMAL, &ev, err, sizeof err), 0);
    assert_string_equal(ev.recipient_account_id, "");
    char *json = json_of(&ev);
    assert_null(strstr(json, "recipientAccountId"));
    assert_non_null(strstr(json, "\"eventType\":\"AwsApiCall\"}"));
    free(json);
    event_parser_destroy(&parser);
}

static void new_parser_needs_a_region(void **state)
{
    event_defaults_t no_region = {.region = NULL, .account_id = "111122223333"};
    event_defaults_t empty_region = {.region = "", .account_id = NULL};
    assert_null(event_parser_new(&no_region));
    assert_null(event_parser_new(&empty_region));
    assert_null(event_parser_new(NULL));
    event_parser_destroy(NULL);
}

static void resources_are_indexed(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    const char *json =
        "{\"eventName\":\"PutObject\",\"eventSource\":\"s3.amazonaws.com\",\"resources\":["
        "{\"type\":\"AWS::S3::Object\",\"ARN\":\"arn:aws:s3:::logs/a.txt\"},"
        "{\"accountId\":\"111122223333\",\"type\":\"AWS::S3::Bucket\",\"ARN\":\"arn:aws:s3:::"
        "logs\","
        "\"extra\":{\"ARN\":\"not-this\"}},"
        "{\"ARNPrefix\":\"arn:aws:s3:::logs/p/\",\"type\":\"AWS::S3::Object\"}]}";
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    assert_int_equal(ev.n_resources, 3);
    assert_string_equal(ev.resources[0]->arn, "arn:aws:s3:::logs/a.txt");
    assert_string_equal(ev.resources[0]->type, "AWS::S3::Object");
    assert_string_equal(ev.resources[0]->account_id, "");
    assert_string_equal(ev.resources[1]->arn, "arn:aws:s3:::logs");
    assert_string_equal(ev.resources[1]->type, "AWS::S3::Bucket");
    assert_string_equal(ev.resources[1]->account_id, "111122223333");
    assert_string_equal(ev.resources[2]->arn, "");
    assert_string_equal(ev.resources[2]->type, "AWS::S3::Object");
    event_parser_destroy(&parser);
}

static void resources_over_the_cap_stay_in_the_json(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    size_t size = 100 * 80 + 200, used = 0;
    char *json = cairn_malloc(size);
    used +=
        (size_t)snprintf(json + used, size - used,
                         "{\"eventName\":\"DeleteObjects\",\"eventSource\":\"s3.amazonaws.com\","
                         "\"resources\":[");
    for (int i = 0; i < 100; i++)
        used += (size_t)snprintf(json + used, size - used, "%s{\"ARN\":\"arn:aws:s3:::b/%d\"}",
                                 i ? "," : "", i);
    snprintf(json + used, size - used, "]}");
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    assert_int_equal(ev.n_resources, 64);
    assert_string_equal(ev.resources[63]->arn, "arn:aws:s3:::b/63");
    char *out = json_of(&ev);
    assert_int_equal(count_of(out, "\"ARN\""), 100);
    assert_non_null(strstr(out, "arn:aws:s3:::b/99"));
    free(out);
    free(json);
    event_parser_destroy(&parser);
}

static void read_only_is_true_false_or_unset(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser, "{\"eventName\":\"a\",\"eventSource\":\"b\",\"readOnly\":true}",
                           &ev, err, sizeof err),
                     0);
    assert_int_equal(ev.read_only, CAIRN__READ_ONLY__READ_ONLY_TRUE);
    assert_int_equal(parse(parser, "{\"readOnly\":false,\"eventName\":\"a\",\"eventSource\":\"b\"}",
                           &ev, err, sizeof err),
                     0);
    assert_int_equal(ev.read_only, CAIRN__READ_ONLY__READ_ONLY_FALSE);
    assert_int_equal(
        parse(parser, "{\"eventName\":\"a\",\"eventSource\":\"b\"}", &ev, err, sizeof err), 0);
    assert_int_equal(ev.read_only, CAIRN__READ_ONLY__READ_ONLY_UNSET);
    event_parser_destroy(&parser);
}

static void category_and_management_event_are_read_not_filled(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser,
                           "{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventCategory\":\"Data\","
                           "\"managementEvent\":false}",
                           &ev, err, sizeof err),
                     0);
    assert_string_equal(ev.event_category, "Data");
    assert_false(ev.management_event);
    assert_int_equal(parse(parser,
                           "{\"managementEvent\":true,\"eventCategory\":\"NetworkActivity\","
                           "\"eventName\":\"a\",\"eventSource\":\"b\"}",
                           &ev, err, sizeof err),
                     0);
    assert_string_equal(ev.event_category, "NetworkActivity");
    assert_true(ev.management_event);
    assert_int_equal(parse(parser, MINIMAL, &ev, err, sizeof err), 0);
    assert_string_equal(ev.event_category, "");
    assert_false(ev.management_event);
    char *json = json_of(&ev);
    assert_null(strstr(json, "eventCategory")); /* read, never filled */
    assert_null(strstr(json, "managementEvent"));
    free(json);

    /* Survives packing: the aggregator and the selectors see it. */
    assert_int_equal(parse(parser,
                           "{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventCategory\":\"Data\","
                           "\"managementEvent\":true}",
                           &ev, err, sizeof err),
                     0);
    size_t size = cairn__event__get_packed_size(&ev);
    uint8_t *buf = cairn_malloc(size);
    cairn__event__pack(&ev, buf);
    Cairn__Event *back = cairn__event__unpack(NULL, size, buf);
    assert_non_null(back);
    assert_string_equal(back->event_category, "Data");
    assert_true(back->management_event);
    cairn__event__free_unpacked(back, NULL);
    free(buf);
    event_parser_destroy(&parser);
}

static void user_identity_is_read_one_level_down(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    const char *json =
        "{\"userIdentity\":{\"sessionContext\":{\"type\":\"no\",\"arn\":\"no\",\"userName\":\"no\","
        "\"accessKeyId\":\"no\"},\"type\":\"IAMUser\",\"arn\":\"arn:aws:iam::1:user/al\","
        "\"userName\":\"al\",\"accessKeyId\":\"AKIAEXAMPLE\",\"invokedBy\":null},"
        "\"resources\":[],\"type\":\"top-level type is not userIdentity.type\","
        "\"eventName\":\"a\",\"eventSource\":\"b\"}";
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    assert_string_equal(ev.user_type, "IAMUser");
    assert_string_equal(ev.user_arn, "arn:aws:iam::1:user/al");
    assert_string_equal(ev.user_name, "al");
    assert_string_equal(ev.access_key_id, "AKIAEXAMPLE");
    assert_int_equal(ev.n_resources, 0);
    event_parser_destroy(&parser);
}

static void strings_and_numbers_keep_their_meaning(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    const char *json = "{\"eventName\":\"Get\\u004fbject\",\"eventSource\":\"s3.amazonaws.com\","
                       "\"userAgent\":\"q\\\"b\\\\s\\u00e9 \xc3\xbc \\/ \\n\\u0001\","
                       "\"userIdentity\":{\"userName\":\"Ren\xc3\xa9\"},"
                       "\"n\":[1e3,-0.5,1.0E+2,0,12345678901234567890123]}";
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    assert_string_equal(ev.event_name, "GetObject");
    assert_string_equal(ev.user_name, "Ren\xc3\xa9");
    char *out = json_of(&ev);
    /* Decoded then re-escaped: \u00e9 comes out as UTF-8, '/' needs no escape. */
    assert_non_null(strstr(out, "\"eventName\":\"GetObject\""));
    assert_non_null(strstr(out, "\"userAgent\":\"q\\\"b\\\\s\xc3\xa9 \xc3\xbc / \\n\\u0001\""));
    assert_non_null(strstr(out, "\"n\":[1e3,-0.5,1.0E+2,0,12345678901234567890123]"));
    free(out);
    event_parser_destroy(&parser);
}

static void event_packs_and_unpacks(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser,
                           "{\"eventName\":\"a\",\"eventSource\":\"b\",\"resources\":[{\"ARN\":"
                           "\"arn:x\"}],\"readOnly\":true}",
                           &ev, err, sizeof err),
                     0);
    size_t size = cairn__event__get_packed_size(&ev);
    uint8_t *buf = cairn_malloc(size);
    assert_int_equal(cairn__event__pack(&ev, buf), size);
    Cairn__Event *back = cairn__event__unpack(NULL, size, buf);
    assert_non_null(back);
    assert_string_equal(back->event_id, ev.event_id);
    assert_int_equal(back->event_time_ms, ev.event_time_ms);
    assert_string_equal(back->event_name, "a");
    assert_string_equal(back->user_name, "");
    assert_int_equal(back->read_only, CAIRN__READ_ONLY__READ_ONLY_TRUE);
    assert_int_equal(back->n_resources, 1);
    assert_string_equal(back->resources[0]->arn, "arn:x");
    assert_int_equal(back->json.len, ev.json.len);
    assert_memory_equal(back->json.data, ev.json.data, ev.json.len);
    cairn__event__free_unpacked(back, NULL);
    free(buf);
    event_parser_destroy(&parser);
}

typedef struct {
    const char *json;     /* the record */
    const char *expected; /* in the message */
} bad_case_t;

static void bad_records_are_rejected_with_the_reason(void **state)
{
    static const bad_case_t cases[] = {
        {"not json", "invalid JSON at byte "},
        {"not json", "lexical error"},
        {"", "invalid JSON at byte 0: parse error: premature EOF"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\"", "premature EOF"},
        {"{\"eventName\":\"a\",\"eventSource\":", "invalid JSON at byte "},
        {"[{\"eventName\":\"a\",\"eventSource\":\"b\"}]",
         "record is not a JSON object (found array)"},
        {"\"GetObject\"", "record is not a JSON object (found string)"},
        {"42", "record is not a JSON object (found number)"},
        {"{\"eventSource\":\"b\"}", "missing required field eventName"},
        {"{\"eventName\":\"a\"}", "missing required field eventSource"},
        {"{}", "missing required field eventName"},
        {"{\"eventName\":5,\"eventSource\":\"b\"}", "eventName is not a string (found number)"},
        {"{\"eventName\":\"\",\"eventSource\":\"b\"}", "eventName is empty"},
        {"{\"eventName\":\"a\\u0000b\",\"eventSource\":\"b\"}", "eventName contains a NUL"},
        {"{\"eventName\":\"a\",\"eventSource\":null}", "eventSource is not a string (found null)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventTime\":\"yesterday\"}",
         "eventTime is not an ISO-8601 UTC time"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventTime\":1741082557}",
         "eventTime is not a string (found number)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"readOnly\":\"yes\"}",
         "readOnly is not a boolean (found string)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"resources\":{}}",
         "resources is not an array (found object)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"resources\":[{},\"arn\"]}",
         "resources[1] is not an object (found string)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"userIdentity\":\"root\"}",
         "userIdentity is not an object (found string)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventName\":\"c\"}",
         "duplicate field eventName"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"resources\":[],\"resources\":[]}",
         "duplicate field resources"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"userIdentity\":{\"arn\":\"x\",\"arn\":\"y\"}"
         "}",
         "duplicate field userIdentity.arn"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"resources\":[{},{\"ARN\":\"x\",\"ARN\":"
         "\"y\"}]}",
         "duplicate field resources[1].ARN"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"awsRegion\":\"\"}", "awsRegion is empty"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventCategory\":\"\"}",
         "eventCategory is empty"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventCategory\":1}",
         "eventCategory is not a string (found number)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"managementEvent\":\"true\"}",
         "managementEvent is not a boolean (found string)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventCategory\":\"Data\","
         "\"eventCategory\":\"Data\"}",
         "duplicate field eventCategory"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventVersion\":1.11}",
         "eventVersion is not a string (found number)"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\"} x", "trailing garbage"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\"}5", "trailing garbage"},
        {"{\"eventName\":\"a\",\"eventSource\":\"b\"}{}", "trailing garbage"},
        {"{\"eventName\":\"a\xff\",\"eventSource\":\"b\"}", "invalid bytes in UTF8 string"},
        {"{\"eventName\":\"a\xc3\",\"eventSource\":\"b\"}", "invalid bytes in UTF8 string"},
        {"{\"eventName\":\"a\",/* c */\"eventSource\":\"b\"}", "invalid JSON at byte "},
    };
    event_parser_t *parser = new_parser("111122223333");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Cairn__Event ev;
        char err[256] = "";
        int rc = parse(parser, cases[i].json, &ev, err, sizeof err);
        if (rc != -1 || !strstr(err, cases[i].expected))
            fail_msg("case %zu (%s): rc %d, err \"%s\", expected \"%s\"", i, cases[i].json, rc, err,
                     cases[i].expected);
        assert_null(strchr(err, '\n'));
        assert_string_equal(ev.event_name, ""); /* nothing half-filled is handed back */
        assert_int_equal(ev.json.len, 0);
    }
    event_parser_destroy(&parser);
}

static void event_id_length_is_limited(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "", json[512], id[200];
    memset(id, 'x', sizeof id);
    id[EVENT_ID_MAX_BYTES] = '\0';
    snprintf(json, sizeof json, "{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventID\":\"%s\"}",
             id);
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    assert_string_equal(ev.event_id, id);
    id[EVENT_ID_MAX_BYTES] = 'x';
    id[EVENT_ID_MAX_BYTES + 1] = '\0';
    snprintf(json, sizeof json, "{\"eventName\":\"a\",\"eventSource\":\"b\",\"eventID\":\"%s\"}",
             id);
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), -1);
    assert_string_equal(err, "eventID is 129 bytes, over the 128-byte limit");
    event_parser_destroy(&parser);
}

/* A record whose "pad" string makes it exactly bytes long. */
static char *record_of_size(size_t bytes)
{
    static const char head[] = "{\"eventName\":\"a\",\"eventSource\":\"b\",\"pad\":\"";
    char *json = cairn_malloc(bytes + 1);
    size_t head_len = sizeof head - 1;
    memcpy(json, head, head_len);
    memset(json + head_len, 'p', bytes - head_len - 2);
    memcpy(json + bytes - 2, "\"}", 3);
    return json;
}

static void record_size_is_limited(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    char *json = record_of_size(EVENT_MAX_RECORD_BYTES);
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    free(json);
    json = record_of_size(300000);
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), -1);
    assert_string_equal(err, "record is 300000 bytes, over the 262144-byte limit");
    free(json);
    event_parser_destroy(&parser);
}

static char *nested_record(int depth)
{
    char *json = cairn_malloc(64 + 2 * (size_t)depth), *p = json;
    p += sprintf(p, "{\"eventName\":\"a\",\"eventSource\":\"b\",\"x\":");
    for (int i = 0; i < depth; i++)
        *p++ = '[';
    for (int i = 0; i < depth; i++)
        *p++ = ']';
    strcpy(p, "}");
    return json;
}

static void nesting_depth_is_limited(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[256] = "";
    char *json = nested_record(126); /* with the record itself: 127 open */
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    free(json);
    json = nested_record(127);
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), -1);
    assert_string_equal(err, "record nests objects and arrays more than 127 levels deep");
    free(json);
    event_parser_destroy(&parser);
}

static void error_buffer_may_be_small_or_absent(void **state)
{
    event_parser_t *parser = new_parser("");
    Cairn__Event ev;
    char err[8];
    assert_int_equal(parse(parser, "{}", &ev, err, sizeof err), -1);
    assert_string_equal(err, "missing");
    assert_int_equal(parse(parser, "{}", &ev, NULL, 0), -1);
    event_parser_destroy(&parser);
}

/* ---- records copied as they are ---- */

/* in with a space after every '{', '[', ',' and ':' outside strings: the
 * same record, which the parser must write again rather than copy. */
static char *spaced(const char *in)
{
    char *out = cairn_malloc(2 * strlen(in) + 1), *o = out;
    int in_string = 0;
    for (const char *p = in; *p; p++) {
        *o++ = *p;
        if (in_string && *p == '\\')
            *o++ = *++p;
        else if (*p == '"')
            in_string = !in_string;
        else if (!in_string && strchr("{[,:", *p))
            *o++ = ' ';
    }
    *o = '\0';
    return out;
}

/* Parses json and checks that the event's JSON is expected. */
static void assert_json_out(event_parser_t *parser, const char *json, const char *expected)
{
    Cairn__Event ev;
    char err[256] = "";
    assert_int_equal(parse(parser, json, &ev, err, sizeof err), 0);
    char *out = json_of(&ev);
    assert_string_equal(out, expected);
    free(out);
}

#define COMPLETE                                                                                   \
    "\"eventVersion\":\"1.11\",\"eventID\":\"c0d4e2b8-1a3f-4b6c-8d9e-2f7a5b3c1e04\","              \
    "\"eventTime\":\"2025-03-04T10:02:37Z\",\"eventName\":\"GetObject\","                          \
    "\"eventSource\":\"s3.amazonaws.com\",\"awsRegion\":\"eu-west-1\","                            \
    "\"eventType\":\"AwsApiCall\",\"recipientAccountId\":\"111122223333\""

/* Records that need nothing filled and are already compact, with every
 * escape written as the parser writes it: the JSON is the input. */
static const char *const CANONICAL_RECORDS[] = {
    "{" COMPLETE "}",
    "{" COMPLETE ",\"userAgent\":\"q\\\"b\\\\s\\n\\t\\r\\b\\f\\u0001\\u001F\"}",
    "{\"userAgent\":\"Ren\xc3\xa9 \xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80 \x7f\"," COMPLETE "}",
    "{" COMPLETE ",\"requestParameters\":{\"a\":{\"b\":[1,-0.5,1e3,1.0E+2,"
    "12345678901234567890123,true,false,null,{},[],[{}],{\"c\":[]}]},\"k\\\"ey\":\"\"}}",
    "{" COMPLETE ",\"userIdentity\":{\"type\":\"IAMUser\",\"userName\":\"a\\\\b\"},"
    "\"resources\":[{\"ARN\":\"arn:aws:s3:::b/k\",\"type\":\"AWS::S3::Object\"}]}",
    "{" COMPLETE ",\"nul\":\"a\\u0000b\",\"empty\":{},\"list\":[[[[]]]]}",
};

static void compact_records_are_copied_as_they_are(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    for (size_t i = 0; i < sizeof CANONICAL_RECORDS / sizeof *CANONICAL_RECORDS; i++) {
        const char *record = CANONICAL_RECORDS[i];
        /* Copied, and the same bytes as when written again from tokens. */
        assert_json_out(parser, record, record);
        char *slow = spaced(record);
        assert_json_out(parser, slow, record);
        free(slow);
    }
    char *fast = compact(RUN_INSTANCES);
    assert_json_out(parser, fast, fast);
    assert_json_out(parser, RUN_INSTANCES, fast);
    free(fast);
    event_parser_destroy(&parser);
}

static void other_spellings_are_written_canonically(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    /* Same meaning, other bytes: escapes JSON allows but the parser does
     * not write, lower-case hex, whitespace. Each comes out as the
     * canonical record, whether the odd part is first, inside or last. */
    static const char *const cases[][2] = {
        {"\"a\":\"\\/\"", "\"a\":\"/\""},
        {"\"a\":\"\\u00e9\\u00E9\"", "\"a\":\"\xc3\xa9\xc3\xa9\""},
        {"\"a\":\"\\u001f\"", "\"a\":\"\\u001F\""},
        {"\"a\":\"\\u000a\"", "\"a\":\"\\n\""},
        {"\"a\":\"\\ud83d\\ude00\"", "\"a\":\"\xf0\x9f\x98\x80\""},
        {"\"a\" : [ 1 , {\"b\" :true} ]", "\"a\":[1,{\"b\":true}]"},
        {"\"a\":{\"k\\u0065y\":null}", "\"a\":{\"key\":null}"},
    };
    char in[512], expected[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(in, sizeof in, "{%s," COMPLETE "}", cases[i][0]);
        snprintf(expected, sizeof expected, "{%s," COMPLETE "}", cases[i][1]);
        assert_json_out(parser, in, expected);
        snprintf(in, sizeof in, "{" COMPLETE ",%s}", cases[i][0]);
        snprintf(expected, sizeof expected, "{" COMPLETE ",%s}", cases[i][1]);
        assert_json_out(parser, in, expected);
        /* The canonical record is itself copied as it is. */
        assert_json_out(parser, expected, expected);
    }
    assert_json_out(parser, "{" COMPLETE " }", "{" COMPLETE "}");
    assert_json_out(parser, "{ " COMPLETE "}", "{" COMPLETE "}");
    /* A CANONICAL_RECORDS record with its resource ARN written "b\/k". */
    assert_json_out(parser,
                    "{" COMPLETE ",\"userIdentity\":{\"type\":\"IAMUser\",\"userName\":\"a\\\\b\"},"
                    "\"resources\":[{\"ARN\":\"arn:aws:s3:::b\\/k\","
                    "\"type\":\"AWS::S3::Object\"}]}",
                    CANONICAL_RECORDS[4]);
    event_parser_destroy(&parser);
}

static void compact_records_still_get_their_fills(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    /* Lacking eventVersion, awsRegion, eventType and recipientAccountId:
     * the record's bytes, then the filled fields. */
    const char *partial = "{\"eventID\":\"x\",\"eventTime\":\"2025-03-04T10:02:37Z\","
                          "\"eventName\":\"Get\",\"eventSource\":\"s3\","
                          "\"n\":[1,{\"a\":\"\\\"\"}]}";
    const char *filled = "{\"eventID\":\"x\",\"eventTime\":\"2025-03-04T10:02:37Z\","
                         "\"eventName\":\"Get\",\"eventSource\":\"s3\",\"n\":[1,{\"a\":\"\\\"\"}],"
                         "\"eventVersion\":\"1.11\",\"awsRegion\":\"eu-central-1\","
                         "\"eventType\":\"AwsApiCall\",\"recipientAccountId\":\"111122223333\"}";
    assert_json_out(parser, partial, filled);
    char *slow = spaced(partial);
    assert_json_out(parser, slow, filled);
    free(slow);
    /* Defaults are escaped like any string. */
    event_defaults_t defaults = {.region = "odd\"re\tgion", .account_id = ""};
    event_parser_t *odd = event_parser_new(&defaults);
    assert_json_out(odd, "{" COMPLETE "}", "{" COMPLETE "}");
    assert_json_out(odd,
                    "{\"eventID\":\"x\",\"eventTime\":\"2025-03-04T10:02:37Z\",\"eventName\":"
                    "\"Get\",\"eventSource\":\"s3\",\"eventVersion\":\"1\",\"eventType\":\"T\"}",
                    "{\"eventID\":\"x\",\"eventTime\":\"2025-03-04T10:02:37Z\",\"eventName\":"
                    "\"Get\",\"eventSource\":\"s3\",\"eventVersion\":\"1\",\"eventType\":\"T\","
                    "\"awsRegion\":\"odd\\\"re\\tgion\"}");
    event_parser_destroy(&odd);
    event_parser_destroy(&parser);
}

static int s_check_canonical(void *ctx, size_t index, const Cairn__Event *event)
{
    const char *expected = CANONICAL_RECORDS[index % 2];
    assert_int_equal(event->json.len, strlen(expected));
    assert_memory_equal(event->json.data, expected, event->json.len);
    (*(size_t *)ctx)++;
    return 0;
}

static void body_records_are_copied_as_they_are(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    char body[2048], err[256] = "";
    size_t calls = 0;
    /* Whitespace between records is outside them: each is still copied. */
    snprintf(body, sizeof body, "{\"Records\": [\n  %s,\n  %s ,%s]}", CANONICAL_RECORDS[0],
             CANONICAL_RECORDS[1], CANONICAL_RECORDS[0]);
    assert_int_equal(event_parser_parse_body(parser, body, strlen(body), s_check_canonical, &calls,
                                             err, sizeof err),
                     3);
    assert_int_equal(calls, 3);
    event_parser_destroy(&parser);
}

/* ---- bodies ---- */

typedef struct {
    size_t calls;      /* records received */
    size_t indexes[8]; /* their index argument */
    char names[8][32]; /* their eventName */
    size_t stop_at;    /* return -1 for this index */
} collector_t;

static int collect(void *ctx, size_t index, const Cairn__Event *event)
{
    collector_t *c = ctx;
    if (c->calls < 8) {
        c->indexes[c->calls] = index;
        snprintf(c->names[c->calls], sizeof c->names[0], "%s", event->event_name);
    }
    c->calls++;
    return index == c->stop_at ? -1 : 0;
}

static long parse_body(event_parser_t *parser, const char *body, collector_t *c, char *err,
                       size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->stop_at = SIZE_MAX;
    return event_parser_parse_body(parser, body, strlen(body), collect, c, err, errlen);
}

static void body_forms_are_recognised(void **state)
{
    event_parser_t *parser = new_parser("");
    collector_t c;
    char err[256] = "";

    assert_int_equal(parse_body(parser, " " RECORD("One") " \n", &c, err, sizeof err), 1);
    assert_int_equal(c.calls, 1);
    assert_string_equal(c.names[0], "One");

    assert_int_equal(parse_body(parser, "[" RECORD("A") ", " RECORD("B") ",\n" RECORD("C") "]", &c,
                                err, sizeof err),
                     3);
    assert_int_equal(c.calls, 3);
    assert_string_equal(c.names[0], "A");
    assert_string_equal(c.names[2], "C");
    assert_int_equal(c.indexes[2], 2);

    assert_int_equal(parse_body(parser, "{\"Records\": [" RECORD("W1") "," RECORD("W2") "]}", &c,
                                err, sizeof err),
                     2);
    assert_string_equal(c.names[0], "W1");
    assert_string_equal(c.names[1], "W2");
    assert_int_equal(c.indexes[1], 1);

    assert_int_equal(parse_body(parser, "[]", &c, err, sizeof err), 0);
    assert_int_equal(parse_body(parser, "{\"Records\":[]}", &c, err, sizeof err), 0);
    assert_int_equal(c.calls, 0);
    event_parser_destroy(&parser);
}

static void body_records_match_single_parses(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    event_parser_t *single = new_parser("111122223333");
    collector_t c;
    char err[256] = "";
    char *body = cairn_malloc(sizeof RUN_INSTANCES + sizeof CONSOLE_LOGIN + 32);
    sprintf(body, "{\"Records\":[%s,\n%s]}", RUN_INSTANCES, CONSOLE_LOGIN);
    assert_int_equal(parse_body(parser, body, &c, err, sizeof err), 2);
    assert_string_equal(c.names[0], "RunInstances");
    assert_string_equal(c.names[1], "ConsoleLogin");
    free(body);

    /* Same JSON out of a body as out of parse. */
    Cairn__Event ev;
    assert_int_equal(parse(single, RUN_INSTANCES, &ev, err, sizeof err), 0);
    char *expected = compact(RUN_INSTANCES);
    assert_int_equal(ev.json.len, strlen(expected));
    assert_memory_equal(ev.json.data, expected, ev.json.len);
    free(expected);
    event_parser_destroy(&single);
    event_parser_destroy(&parser);
}

typedef struct {
    const char *body;     /* the request body */
    long delivered;       /* records fn gets before the error */
    const char *expected; /* in the message */
} bad_body_t;

static void bad_bodies_are_rejected_with_the_reason(void **state)
{
    static const bad_body_t cases[] = {
        {"[1,2]", 0, "record 0: not a JSON object (found number)"},
        {"[" RECORD("A") ",[]]", 1, "record 1: not a JSON object (found array)"},
        {"{\"Records\":5}", 0, "Records is not an array (found number)"},
        {"{\"Records\":{}}", 0, "Records is not an array (found object)"},
        {"{\"Records\":[" RECORD("A") "],\"x\":1}", 1, "wrapper has a key besides Records"},
        {"\"records\"", 0, "body is not a JSON object or array (found string)"},
        {"null", 0, "body is not a JSON object or array (found null)"},
        {"", 0, "invalid JSON at byte 0"},
        {"nope", 0, "invalid JSON at byte "},
        {"[" RECORD("A") ",{\"eventName\":\"B\"}]", 1,
         "record 1: missing required field eventSource"},
        {"[" RECORD("A") "," RECORD("B") ",{\"eventName\":\"C\",\"eventSource\":7}]", 2,
         "record 2: eventSource is not a string (found number)"},
        {"{\"Records\":[" RECORD("A") ",{\"eventName\":\"B\"}]}", 1, "record 1: missing"},
        {"{\"eventName\":\"B\"}", 0, "record 0: missing required field eventSource"},
        {"{}", 0, "record 0: missing required field eventName"},
        {"[" RECORD("A") ",{\"eventName\":", 1, "record 1: invalid JSON at byte "},
        {"[" RECORD("A") "] x", 1, "trailing garbage"},
    };
    event_parser_t *parser = new_parser("");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        collector_t c;
        char err[256] = "";
        long rc = parse_body(parser, cases[i].body, &c, err, sizeof err);
        if (rc != -1 || (long)c.calls != cases[i].delivered || !strstr(err, cases[i].expected))
            fail_msg("case %zu (%s): rc %ld, %zu records, err \"%s\", expected \"%s\"", i,
                     cases[i].body, rc, c.calls, err, cases[i].expected);
    }
    event_parser_destroy(&parser);
}

static void body_record_size_is_limited_per_record(void **state)
{
    event_parser_t *parser = new_parser("");
    collector_t c;
    char err[256] = "";
    char *big = record_of_size(300000);
    char *body = cairn_malloc(300000 + 4 * sizeof RECORD("A"));
    sprintf(body, "[%s,%s]", RECORD("A"), big);
    assert_int_equal(parse_body(parser, body, &c, err, sizeof err), -1);
    assert_int_equal(c.calls, 1);
    assert_string_equal(err, "record 1: record is 300000 bytes, over the 262144-byte limit");
    free(body);
    free(big);

    /* A body may exceed the limit when each record is within it. */
    char *fits = record_of_size(200000);
    body = cairn_malloc(3 * 200000 + 8);
    sprintf(body, "[%s,%s,%s]", fits, fits, fits);
    assert_int_equal(parse_body(parser, body, &c, err, sizeof err), 3);
    free(body);
    free(fits);
    event_parser_destroy(&parser);
}

static void body_callback_can_stop(void **state)
{
    event_parser_t *parser = new_parser("");
    collector_t c;
    char err[256] = "";
    const char *body = "[" RECORD("A") "," RECORD("B") "," RECORD("C") "]";
    memset(&c, 0, sizeof c);
    c.stop_at = 1;
    assert_int_equal(
        event_parser_parse_body(parser, body, strlen(body), collect, &c, err, sizeof err), -1);
    assert_int_equal(c.calls, 2);
    assert_string_equal(err, "stopped at record 1");
    event_parser_destroy(&parser);
}

/* ---- allocation ---- */

static void parsing_does_not_allocate_after_warm_up(void **state)
{
    event_parser_t *parser = new_parser("111122223333");
    Cairn__Event ev;
    collector_t c;
    char err[256] = "";
    char *body = cairn_malloc(2 * sizeof RUN_INSTANCES + sizeof CONSOLE_LOGIN + 32);
    sprintf(body, "{\"Records\":[%s,%s,%s]}", RUN_INSTANCES, CONSOLE_LOGIN, RUN_INSTANCES);
    const char *escaped = "{\"eventName\":\"a\\u00e9\",\"eventSource\":\"b\",\"x\":[[[[1]]]]}";
    /* A 60 KB string with escapes outgrows yajl's first buffers. */
    char *big = record_of_size(60000);
    memcpy(big + 100, "\\n", 2);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(parse(parser, RUN_INSTANCES, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, MINIMAL, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, escaped, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, big, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, "{\"eventName\":5}", &ev, err, sizeof err), -1);
        assert_int_equal(parse_body(parser, body, &c, err, sizeof err), 3);
    }
    uint64_t before = cairn_alloc_count();
    for (int i = 0; i < 100; i++) {
        assert_int_equal(parse(parser, RUN_INSTANCES, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, MINIMAL, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, escaped, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, big, &ev, err, sizeof err), 0);
        assert_int_equal(parse(parser, "{\"eventName\":5}", &ev, err, sizeof err), -1);
        assert_int_equal(parse_body(parser, body, &c, err, sizeof err), 3);
    }
    assert_int_equal(cairn_alloc_count(), before);
    free(big);
    free(body);
    event_parser_destroy(&parser);
}

static void uuids_are_v4_and_differ(void **state)
{
    char a[37], b[37];
    event_uuid_v4(a);
    event_uuid_v4(b);
    assert_true(is_uuid_v4(a));
    assert_true(is_uuid_v4(b));
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(run_instances_example_is_indexed_and_kept),
        cmocka_unit_test(console_login_example_is_indexed_and_kept),
        cmocka_unit_test(minimal_record_is_filled_and_reparses),
        cmocka_unit_test(empty_default_account_is_not_filled),
        cmocka_unit_test(new_parser_needs_a_region),
        cmocka_unit_test(resources_are_indexed),
        cmocka_unit_test(resources_over_the_cap_stay_in_the_json),
        cmocka_unit_test(read_only_is_true_false_or_unset),
        cmocka_unit_test(category_and_management_event_are_read_not_filled),
        cmocka_unit_test(user_identity_is_read_one_level_down),
        cmocka_unit_test(strings_and_numbers_keep_their_meaning),
        cmocka_unit_test(event_packs_and_unpacks),
        cmocka_unit_test(bad_records_are_rejected_with_the_reason),
        cmocka_unit_test(event_id_length_is_limited),
        cmocka_unit_test(record_size_is_limited),
        cmocka_unit_test(nesting_depth_is_limited),
        cmocka_unit_test(error_buffer_may_be_small_or_absent),
        cmocka_unit_test(compact_records_are_copied_as_they_are),
        cmocka_unit_test(other_spellings_are_written_canonically),
        cmocka_unit_test(compact_records_still_get_their_fills),
        cmocka_unit_test(body_records_are_copied_as_they_are),
        cmocka_unit_test(body_forms_are_recognised),
        cmocka_unit_test(body_records_match_single_parses),
        cmocka_unit_test(bad_bodies_are_rejected_with_the_reason),
        cmocka_unit_test(body_record_size_is_limited_per_record),
        cmocka_unit_test(body_callback_can_stop),
        cmocka_unit_test(parsing_does_not_allocate_after_warm_up),
        cmocka_unit_test(uuids_are_v4_and_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
