/* query_api_test.c: LookupEvents, through query_api.h.
 *
 * Most tests call query_api_lookup_events with request bodies and read the
 * answers with yajl's tree API: paging, NextToken binding and forgery, the
 * response shape, every error type. One test serves the API over HTTP on
 * 127.0.0.1 and signs requests with libcurl's SigV4 (as the AWS CLI signs
 * them): right key, wrong secret, both X-Amz-Target forms. */
#include "cairn_http.h"
#include "cairn_log.h"
#include "query_api.h"
#include "store.h"

#include <curl/curl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include <cmocka.h>

#define TEST_MAP_BYTES (64 * 1024 * 1024)
#define EVENT_COUNT    130 /* 120 by "pager" (three pages), 10 by "other" */

typedef struct {
    char dir[64];
    char path[96];
    store_t *store;
    query_api_t *api;
} fixture_t;

static void s_put_events(store_t *store)
{
    static Cairn__Event events[EVENT_COUNT];
    static Cairn__Event *ptrs[EVENT_COUNT];
    static char ids[EVENT_COUNT][32], json[EVENT_COUNT][160];
    static Cairn__Resource resource = CAIRN__RESOURCE__INIT;
    static Cairn__Resource *resources[1] = {&resource};
    resource.type = "AWS::S3::Bucket";
    resource.arn = "arn:aws:s3:::trail-bucket";
    for (int i = 0; i < EVENT_COUNT; i++) {
        Cairn__Event *e = &events[i];
        cairn__event__init(e);
        snprintf(ids[i], sizeof ids[i], "evt-%03d", i);
        snprintf(
            json[i], sizeof json[i],
            "{\"eventID\":\"%s\",\"eventName\":\"GetObject\",\"note\":\"tab\\there \\\"q\\\"\"}",
            ids[i]);
        e->event_id = ids[i];
        e->event_time_ms = 1700000000000 + (int64_t)i * 1500; /* half seconds too */
        e->event_name = i % 2 ? "GetObject" : "PutObject";
        e->event_source = "s3.amazonaws.com";
        e->aws_region = "us-east-1";
        e->recipient_account_id = "111122223333";
        e->user_name = i < 120 ? "pager" : "other";
        e->access_key_id = "AKIAPAGER";
        e->read_only = i % 2 ? CAIRN__READ_ONLY__READ_ONLY_TRUE : CAIRN__READ_ONLY__READ_ONLY_FALSE;
        e->resources = resources;
        e->n_resources = 1;
        e->json.data = (uint8_t *)json[i];
        e->json.len = strlen(json[i]);
        ptrs[i] = e;
    }
    Cairn__Batch batch = CAIRN__BATCH__INIT;
    batch.agent_id = "agent-q";
    batch.first_seq = 1;
    batch.n_events = EVENT_COUNT;
    batch.events = ptrs;
    const Cairn__Batch *batches[1] = {&batch};
    store_batch_result_t result;
    assert_int_equal(store_put_batches(store, batches, 1, 1000, &result), 0);
    assert_int_equal(result.stored_count, EVENT_COUNT);
}

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/query_api_test.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/store", fx->dir);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    if (!fx->store)
        return -1;
    s_put_events(fx->store);
    query_api_options_t options = {NULL, NULL};
    fx->api = query_api_new(fx->store, &options);
    *state = fx;
    return fx->api ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    query_api_destroy(&fx->api);
    store_destroy(&fx->store);
    nftw(fx->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Runs body; returns the parsed answer (caller frees) and its status. */
static yajl_val s_lookup(query_api_t *api, const char *body, int *status)
{
    cairn_http_response_t response = {.status = 200};
    query_api_lookup_events(api, body, strlen(body), &response);
    *status = response.status;
    assert_string_equal(response.content_type, "application/x-amz-json-1.1");
    char err[256];
    yajl_val root = yajl_tree_parse(response.body, err, sizeof err);
    if (!root)
        fail_msg("answer is not JSON (%s): %s", err, response.body);
    free(response.body);
    return root;
}

static yajl_val s_get(yajl_val v, const char *key)
{
    const char *path[] = {key, NULL};
    return yajl_tree_get(v, path, yajl_t_any);
}

static const char *s_str(yajl_val v, const char *key)
{
    yajl_val s = s_get(v, key);
    return s && YAJL_IS_STRING(s) ? YAJL_GET_STRING(s) : NULL;
}

/* Checks an error answer: status 400 (or as given) and __type. */
static void s_expect_error(query_api_t *api, const char *body, const char *type)
{
    int status;
    yajl_val root = s_lookup(api, body, &status);
    assert_int_equal(status, 400);
    const char *got = s_str(root, "__type");
    if (!got || strcmp(got, type) != 0)
        fail_msg("%s: expected %s, got %s (%s)", body, type, got ? got : "none",
                 s_str(root, "message") ? s_str(root, "message") : "");
    assert_non_null(s_str(root, "message"));
    yajl_tree_free(root);
}

static void pages_of_fifty_then_no_token(void **state)
{
    fixture_t *fx = *state;
    char body[512], seen[EVENT_COUNT] = {0};
    char token[128] = "";
    int64_t last_ms = INT64_MAX;
    size_t total = 0;
    for (int page = 0; page < 3; page++) {
        int n = snprintf(body, sizeof body,
                         "{\"LookupAttributes\": [{\"AttributeKey\": \"Username\", "
                         "\"AttributeValue\": \"pager\"}]");
        if (token[0])
            n += snprintf(body + n, sizeof body - (size_t)n, ", \"NextToken\": \"%s\"", token);
        snprintf(body + n, sizeof body - (size_t)n, "}");
        int status;
        yajl_val root = s_lookup(fx->api, body, &status);
        assert_int_equal(status, 200);
        yajl_val events = s_get(root, "Events");
        assert_true(YAJL_IS_ARRAY(events));
        assert_int_equal(events->u.array.len, page < 2 ? 50 : 20);
        for (size_t i = 0; i < events->u.array.len; i++) {
            yajl_val e = events->u.array.values[i];
            int id = atoi(s_str(e, "EventId") + 4);
            assert_false(seen[id]);
            seen[id] = 1;
            yajl_val time = s_get(e, "EventTime");
            assert_true(YAJL_IS_NUMBER(time));
            int64_t ms = (int64_t)(YAJL_GET_DOUBLE(time) * 1000 + 0.5);
            assert_int_equal(ms, 1700000000000 + (int64_t)id * 1500);
            assert_true(ms < last_ms); /* newest first */
            last_ms = ms;
            total++;
        }
        const char *next = s_str(root, "NextToken");
        if (page < 2) {
            assert_non_null(next);
            snprintf(token, sizeof token, "%s", next);
        } else
            assert_null(next);
        yajl_tree_free(root);
    }
    assert_int_equal(total, 120);

    /* MaxResults smaller; the same token works with another MaxResults. */
    int status;
    yajl_val root = s_lookup(fx->api, "{\"MaxResults\": 7}", &status);
    assert_int_equal(s_get(root, "Events")->u.array.len, 7);
    snprintf(token, sizeof token, "%s", s_str(root, "NextToken"));
    yajl_tree_free(root);
    snprintf(body, sizeof body, "{\"MaxResults\": 3, \"NextToken\": \"%s\"}", token);
    root = s_lookup(fx->api, body, &status);
    yajl_val events = s_get(root, "Events");
    assert_int_equal(events->u.array.len, 3);
    assert_string_equal(s_str(events->u.array.values[0], "EventId"), "evt-122");
    yajl_tree_free(root);
}

static void an_event_has_cloudtrails_shape(void **state)
{
    fixture_t *fx = *state;
    int status;
    yajl_val root = s_lookup(fx->api,
                             "{\"LookupAttributes\":[{\"AttributeKey\":\"EventId\","
                             "\"AttributeValue\":\"evt-007\"}]}",
                             &status);
    assert_int_equal(status, 200);
    yajl_val events = s_get(root, "Events");
    assert_int_equal(events->u.array.len, 1);
    yajl_val e = events->u.array.values[0];
    assert_string_equal(s_str(e, "EventId"), "evt-007");
    assert_string_equal(s_str(e, "EventName"), "GetObject");
    assert_string_equal(s_str(e, "ReadOnly"), "true"); /* a string, as CloudTrail */
    assert_string_equal(s_str(e, "AccessKeyId"), "AKIAPAGER");
    assert_string_equal(s_str(e, "EventSource"), "s3.amazonaws.com");
    assert_string_equal(s_str(e, "Username"), "pager");
    assert_true(YAJL_IS_NUMBER(s_get(e, "EventTime")));
    assert_true(YAJL_GET_DOUBLE(s_get(e, "EventTime")) == 1700000010.5);
    yajl_val resources = s_get(e, "Resources");
    assert_int_equal(resources->u.array.len, 1);
    assert_string_equal(s_str(resources->u.array.values[0], "ResourceType"), "AWS::S3::Bucket");
    assert_string_equal(s_str(resources->u.array.values[0], "ResourceName"),
                        "arn:aws:s3:::trail-bucket");
    const char *record = s_str(e, "CloudTrailEvent");
    assert_string_equal(record, "{\"eventID\":\"evt-007\",\"eventName\":\"GetObject\","
                                "\"note\":\"tab\\there \\\"q\\\"\"}");
    assert_null(s_str(root, "NextToken"));
    yajl_tree_free(root);

    /* Every attribute key is accepted; ReadOnly, ResourceName, time range. */
    root = s_lookup(fx->api,
                    "{\"LookupAttributes\":[{\"AttributeKey\":\"ReadOnly\",\"AttributeValue\":"
                    "\"false\"}],\"StartTime\":1700000000,\"EndTime\":1700000003.0}",
                    &status);
    events = s_get(root, "Events");
    assert_int_equal(events->u.array.len, 2); /* evt-000 and evt-002 */
    assert_string_equal(s_str(events->u.array.values[0], "EventId"), "evt-002");
    yajl_tree_free(root);
    root = s_lookup(fx->api,
                    "{\"LookupAttributes\":[{\"AttributeKey\":\"ResourceName\",\"AttributeValue\":"
                    "\"trail-bucket\"}],\"MaxResults\":50}",
                    &status);
    assert_int_equal(s_get(root, "Events")->u.array.len, 50);
    yajl_tree_free(root);
    root = s_lookup(fx->api, "{\"EventCategory\":\"insight\"}", &status);
    assert_int_equal(status, 200);
    assert_int_equal(s_get(root, "Events")->u.array.len, 0);
    yajl_tree_free(root);
    root = s_lookup(fx->api, "", &status); /* no body: all members are optional */
    assert_int_equal(s_get(root, "Events")->u.array.len, 50);
    yajl_tree_free(root);
}

static void bad_requests_get_cloudtrails_errors(void **state)
{
    fixture_t *fx = *state;
    s_expect_error(
        fx->api,
        "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\",\"AttributeValue\":\"a\"},"
        "{\"AttributeKey\":\"EventName\",\"AttributeValue\":\"b\"}]}",
        "InvalidLookupAttributesException");
    s_expect_error(
        fx->api,
        "{\"LookupAttributes\":[{\"AttributeKey\":\"UserName\",\"AttributeValue\":\"a\"}]}",
        "ValidationException");
    s_expect_error(fx->api, "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\"}]}",
                   "ValidationException");
    s_expect_error(
        fx->api, "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\",\"AttributeValue\":\"\"}]}",
        "ValidationException");
    s_expect_error(
        fx->api,
        "{\"LookupAttributes\":[{\"AttributeKey\":\"ReadOnly\",\"AttributeValue\":\"yes\"}]}",
        "InvalidLookupAttributesException");
    static char big[2300];
    int n =
        snprintf(big, sizeof big,
                 "{\"LookupAttributes\":[{\"AttributeKey\":\"EventName\",\"AttributeValue\":\"");
    memset(big + n, 'x', 2001);
    strcpy(big + n + 2001, "\"}]}");
    s_expect_error(fx->api, big, "ValidationException");
    s_expect_error(fx->api, "{\"StartTime\":20,\"EndTime\":10}", "InvalidTimeRangeException");
    s_expect_error(fx->api, "{\"StartTime\":\"yesterday\"}", "SerializationException");
    s_expect_error(fx->api, "{\"MaxResults\":51}", "InvalidMaxResultsException");
    s_expect_error(fx->api, "{\"MaxResults\":0}", "InvalidMaxResultsException");
    s_expect_error(fx->api, "{\"MaxResults\":2.5}", "InvalidMaxResultsException");
    s_expect_error(fx->api, "{\"EventCategory\":\"management\"}", "InvalidEventCategoryException");
    s_expect_error(fx->api, "{\"NextToken\":\"garbage\"}", "InvalidNextTokenException");
    s_expect_error(fx->api, "[1,2]", "SerializationException");
    s_expect_error(fx->api, "{\"LookupAttributes\":", "SerializationException");
}

/* A token works only with the parameters it was made for, unaltered, and
 * only on an API with the same key. */
static void next_tokens_cannot_be_forged_or_moved(void **state)
{
    fixture_t *fx = *state;
    const char *query = "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\","
                        "\"AttributeValue\":\"pager\"}],\"StartTime\":1700000000";
    char body[512], token[128];
    int status;
    snprintf(body, sizeof body, "%s}", query);
    yajl_val root = s_lookup(fx->api, body, &status);
    snprintf(token, sizeof token, "%s", s_str(root, "NextToken"));
    yajl_tree_free(root);

    snprintf(body, sizeof body, "%s,\"NextToken\":\"%s\"}", query, token);
    root = s_lookup(fx->api, body, &status);
    assert_int_equal(status, 200);
    yajl_tree_free(root);

    /* Another value, another key, a wider time range, no time range. */
    const char *others[] = {
        "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\",\"AttributeValue\":\"other\"}],"
        "\"StartTime\":1700000000",
        "{\"LookupAttributes\":[{\"AttributeKey\":\"EventName\",\"AttributeValue\":\"pager\"}],"
        "\"StartTime\":1700000000",
        "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\",\"AttributeValue\":\"pager\"}],"
        "\"StartTime\":1600000000",
        "{\"LookupAttributes\":[{\"AttributeKey\":\"Username\",\"AttributeValue\":\"pager\"}]",
    };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        snprintf(body, sizeof body, "%s,\"NextToken\":\"%s\"}", others[i], token);
        s_expect_error(fx->api, body, "InvalidNextTokenException");
    }
    /* Each character altered in turn. */
    for (size_t i = 0; token[i]; i++) {
        char forged[128];
        snprintf(forged, sizeof forged, "%s", token);
        forged[i] = forged[i] == 'A' ? 'B' : 'A';
        snprintf(body, sizeof body, "%s,\"NextToken\":\"%s\"}", query, forged);
        s_expect_error(fx->api, body, "InvalidNextTokenException");
    }
    /* Another API (a restart with a random key) refuses it; one with the
     * same configured secret takes tokens across instances. */
    query_api_options_t options = {NULL, NULL};
    query_api_t *restarted = query_api_new(fx->store, &options);
    snprintf(body, sizeof body, "%s,\"NextToken\":\"%s\"}", query, token);
    s_expect_error(restarted, body, "InvalidNextTokenException");
    query_api_destroy(&restarted);

    options.token_secret = "0123456789abcdef0123";
    query_api_t *a = query_api_new(fx->store, &options);
    query_api_t *b = query_api_new(fx->store, &options);
    snprintf(body, sizeof body, "%s}", query);
    root = s_lookup(a, body, &status);
    snprintf(token, sizeof token, "%s", s_str(root, "NextToken"));
    yajl_tree_free(root);
    snprintf(body, sizeof body, "%s,\"NextToken\":\"%s\"}", query, token);
    root = s_lookup(b, body, &status);
    assert_int_equal(status, 200);
    yajl_tree_free(root);
    query_api_destroy(&a);
    query_api_destroy(&b);

    options.token_secret = "short";
    assert_null(query_api_new(fx->store, &options));
}

/* --- over HTTP, signed by libcurl ----------------------------------------- */

static void s_handle(void *ctx, const cairn_http_request_t *request,
                     cairn_http_response_t *response)
{
    if (!query_api_handle(ctx, request, response))
        cairn_http_respond_error(response, 404, "not the API");
}

static size_t s_collect(char *data, size_t size, size_t nmemb, void *ctx)
{
    char *out = ctx;
    size_t have = strlen(out), n = size * nmemb;
    if (have + n < 65536) {
        memcpy(out + have, data, n);
        out[have + n] = '\0';
    }
    return n;
}

static long s_post(int port, const char *secret, const char *target, const char *body, char *answer)
{
    CURL *curl = curl_easy_init();
    char url[64], userpwd[128], target_header[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    snprintf(userpwd, sizeof userpwd, "AKIAQUERYTEST:%s", secret);
    snprintf(target_header, sizeof target_header, "X-Amz-Target: %s", target);
    struct curl_slist *headers = curl_slist_append(NULL, target_header);
    headers = curl_slist_append(headers, "Content-Type: application/x-amz-json-1.1");
    answer[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:cloudtrail");
    curl_easy_setopt(curl, CURLOPT_USERPWD, userpwd);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    long code = 0;
    if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return code;
}

static void signed_requests_over_http(void **state)
{
    fixture_t *fx = *state;
    char err[256];
    sigv4_keys_t *keys = sigv4_keys_new();
    assert_int_equal(sigv4_keys_add(keys, "AKIAQUERYTEST", "right-secret", err, sizeof err), 0);
    query_api_options_t options = {keys, NULL};
    query_api_t *api = query_api_new(fx->store, &options);
    cairn_http_t *http = cairn_http_new("query-test", "127.0.0.1:0", 2, 64 << 10, s_handle, api);
    assert_non_null(http);
    int port = cairn_http_port(http);
    static char answer[65536];
    const char *body = "{\"LookupAttributes\": [{\"AttributeKey\": \"Username\", "
                       "\"AttributeValue\": \"other\"}], \"MaxResults\": 5}";
    const char *long_target = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";

    assert_int_equal(s_post(port, "right-secret", long_target, body, answer), 200);
    assert_non_null(strstr(answer, "\"EventId\":\"evt-129\""));
    assert_non_null(strstr(answer, "\"NextToken\":"));
    assert_int_equal(s_post(port, "right-secret", "CloudTrail_20131101.LookupEvents", body, answer),
                     200);
    assert_non_null(strstr(answer, "\"EventId\":\"evt-129\""));

    assert_int_equal(s_post(port, "wrong-secret", long_target, body, answer), 403);
    assert_non_null(strstr(answer, "\"__type\":\"SignatureDoesNotMatch\""));

    assert_int_equal(
        s_post(port, "right-secret", "CloudTrail_20131101.DescribeTrails", body, answer), 400);
    assert_non_null(strstr(answer, "\"__type\":\"UnknownOperationException\""));

    cairn_http_destroy(&http);
    query_api_destroy(&api);
    sigv4_keys_destroy(&keys);
}

int main(void)
{
    cairn_log_level = CAIRN_LOG_WARNING;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pages_of_fifty_then_no_token, setup, teardown),
        cmocka_unit_test_setup_teardown(an_event_has_cloudtrails_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_requests_get_cloudtrails_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(next_tokens_cannot_be_forged_or_moved, setup, teardown),
        cmocka_unit_test_setup_teardown(signed_requests_over_http, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
