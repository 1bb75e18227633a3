/* sigv4_test.c: the SigV4 verifier against signatures made by botocore
 * (preinstalled botocore 1.43.11, SigV4Auth with a fixed timestamp; the
 * script is in the comment below) and AWS's own "get-vanilla" test vector,
 * then each way a request is refused.
 *
 *   from botocore.auth import SigV4Auth
 *   from botocore.awsrequest import AWSRequest
 *   from botocore.credentials import Credentials
 *   req = AWSRequest(method=M, url=URL, data=BODY, headers=HEADERS)
 *   req.context["timestamp"] = req.headers["X-Amz-Date"] = "20261124T112454Z"
 *   a = SigV4Auth(Credentials(KEY, SECRET), SERVICE, REGION)
 *   a.signature(a.string_to_sign(req, a.canonical_request(req)), req)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "sigv4.h"

#define KEY_ID    "AKIAIOSFODNN7EXAMPLE"
#define SECRET    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define SIGNED_MS (1795519494LL * 1000) /* 20261124T112454Z */
#define MINUTE_MS (60 * 1000LL)
#define PAE_QUERY "channelArn=arn%3Aaws%3Acloudtrail%3Aus-east-1%3A123456789012%3Achannel%2Fabc"
#define PAE_BODY                                                                                   \
    "{\"auditEvents\": [{\"id\": \"1\", \"eventData\": \"{\\\"version\\\":\\\"1.0\\\"}\"}]}"
#define PAE_AUTH                                                                                   \
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/cloudtrail-data/"         \
    "aws4_request, SignedHeaders=content-type;host;x-amz-date, "                                   \
    "Signature=8d34a4856a167d9496a570cabbf3e7b6305345dd40dcf8a880bb0287ec1e753d"

typedef struct {
    const char *name;
    const char *value;
} header_t;

/* A request under test: headers by name, any case. */
typedef struct {
    header_t headers[8];
    sigv4_request_t request;
} fake_t;

static const char *s_header(void *ctx, const char *name)
{
    fake_t *fake = ctx;
    for (size_t i = 0; i < 8 && fake->headers[i].name; i++)
        if (strcasecmp(fake->headers[i].name, name) == 0)
            return fake->headers[i].value;
    return NULL;
}

static void s_set_header(fake_t *fake, const char *name, const char *value)
{
    size_t i = 0;
    while (i < 8 && fake->headers[i].name && strcasecmp(fake->headers[i].name, name) != 0)
        i++;
    assert_true(i < 8);
    if (!value) { /* remove: move the rest down */
        for (; i + 1 < 8; i++)
            fake->headers[i] = fake->headers[i + 1];
        fake->headers[7] = (header_t){NULL, NULL};
    } else
        fake->headers[i] = (header_t){name, value};
}

/* What `aws cloudtrail-data put-audit-events` sent (environment.md 5b). */
static fake_t s_put_audit_events(void)
{
    fake_t fake = {.headers = {{"Host", "127.0.0.1:8788"},
                               {"Accept-Encoding", "identity"},
                               {"Content-Type", "application/json"},
                               {"X-Amz-Date", "20261124T112454Z"},
                               {"Authorization", PAE_AUTH},
                               {"amz-sdk-request", "attempt=1"}}};
    fake.request = (sigv4_request_t){"POST", "/PutAuditEvents", PAE_QUERY,       s_header,
                                     NULL,   PAE_BODY,          strlen(PAE_BODY)};
    return fake;
}

static sigv4_keys_t *s_keys(void)
{
    sigv4_keys_t *keys = sigv4_keys_new();
    assert_int_equal(sigv4_keys_add(keys, "AKIAOTHERKEY0000", "other-secret", NULL, 0), 0);
    assert_int_equal(sigv4_keys_add(keys, KEY_ID, SECRET, NULL, 0), 0);
    return keys;
}

static int s_verify(sigv4_keys_t *keys, fake_t *fake, const char *service, const char *region,
                    int64_t now_ms, sigv4_error_t *error)
{
    fake->request.header_ctx = fake;
    return sigv4_verify(keys, &fake->request, service, region, now_ms, error);
}

static void accepts_what_the_aws_cli_signs(void **state)
{
    sigv4_keys_t *keys = s_keys();
    sigv4_error_t error;
    fake_t fake = s_put_audit_events();
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS, &error), 0);
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", "us-east-1", SIGNED_MS, &error), 0);
    /* The query is decoded and encoded again: other spellings of the same
     * parameters verify too. */
    fake.request.query =
        "channelArn=arn%3aaws%3acloudtrail%3aus-east-1%3a123456789012%3achannel%2fabc";
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS, &error), 0);
    fake.request.query = "channelArn=arn:aws:cloudtrail:us-east-1:123456789012:channel/abc";
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS, &error), 0);
    /* Within 15 minutes either way. */
    assert_int_equal(
        s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS + 14 * MINUTE_MS, &error), 0);
    assert_int_equal(
        s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS - 14 * MINUTE_MS, &error), 0);
    /* Upper-case hex in Signature is the same signature. */
    s_set_header(&fake, "Authorization",
                 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/"
                 "cloudtrail-data/aws4_request,SignedHeaders=content-type;host;x-amz-date,"
                 "Signature=8D34A4856A167D9496A570CABBF3E7B6305345DD40DCF8A880BB0287EC1E753D");
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS, &error), 0);
    sigv4_keys_destroy(&keys);
    assert_null(keys);
}

static void canonicalizes_headers_path_and_query_like_botocore(void **state)
{
    sigv4_keys_t *keys = s_keys();
    sigv4_error_t error;
    /* A signed header with spaces to trim and collapse; region eu-west-2. */
    const char *body = "{\"eventName\":\"X\",\"eventSource\":\"y\"}";
    fake_t fake = {.headers = {{"host", "127.0.0.1:4780"},
                               {"content-type", "application/json"},
                               {"x-custom", "  a   b  c "},
                               {"x-amz-date", "20261124T112454Z"},
                               {"authorization",
                                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/"
                                "eu-west-2/cloudtrail-data/aws4_request, "
                                "SignedHeaders=content-type;host;x-amz-date;x-custom, "
                                "Signature=87492d44b1140237a15d3f3b706720cef5bb8f5ac5a368bd9de9dc"
                                "737b88389b"}}};
    fake.request =
        (sigv4_request_t){"POST", "/v1/events", NULL, s_header, NULL, body, strlen(body)};
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", "eu-west-2", SIGNED_MS, &error), 0);
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", "us-east-1", SIGNED_MS, &error), -1);
    assert_int_equal(error.reason, SIGV4_BAD_SIGNATURE);
    s_set_header(&fake, "x-custom", "a b c");
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS, &error), 0);

    /* Dot segments, an empty segment, an encoded space (encoded twice in
     * the canonical path), unsorted and repeated query parameters, and
     * x-amz-content-sha256. */
    fake_t get = {
        .headers = {
            {"Host", "localhost"},
            {"X-Amz-Date", "20261124T112454Z"},
            {"X-Amz-Content-SHA256",
             "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
            {"Authorization",
             "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/"
             "cloudtrail/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
             "Signature=8e57be3008dabd1d44da980d5be75f8d00d6663e1b4b668175a5ab28a2be0447"}}};
    get.request =
        (sigv4_request_t){"GET", "/a%20b/./c//d", "b=2&a=x%20y&a=1&c=", s_header, NULL, "", 0};
    assert_int_equal(s_verify(keys, &get, "cloudtrail", NULL, SIGNED_MS, &error), 0);
    get.request.query = "c&a=1&b=2&a=x%20y";
    assert_int_equal(s_verify(keys, &get, "cloudtrail", NULL, SIGNED_MS, &error), 0);
    get.request.path = "/a%20b/x/../c/d";
    assert_int_equal(s_verify(keys, &get, "cloudtrail", NULL, SIGNED_MS, &error), 0);
    get.request.path = "/a b/c/d"; /* not the same path: the client encoded it */
    assert_int_equal(s_verify(keys, &get, "cloudtrail", NULL, SIGNED_MS, &error), -1);
    sigv4_keys_destroy(&keys);
}

static void matches_the_aws_get_vanilla_vector(void **state)
{
    sigv4_keys_t *keys = sigv4_keys_new();
    assert_int_equal(
        sigv4_keys_add(keys, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL, 0),
        0);
    sigv4_error_t error;
    fake_t fake = {.headers = {{"Host", "example.amazonaws.com"},
                               {"X-Amz-Date", "20150830T123600Z"},
                               {"Authorization",
                                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
                                "service/aws4_request, SignedHeaders=host;x-amz-date, "
                                "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae"
                                "1d763fbf31"}}};
    fake.request = (sigv4_request_t){"GET", "/", "", s_header, NULL, "", 0};
    assert_int_equal(s_verify(keys, &fake, "service", "us-east-1", 1440938160LL * 1000, &error), 0);
    sigv4_keys_destroy(&keys);
}

static void s_expect(sigv4_keys_t *keys, fake_t *fake, int64_t now_ms, sigv4_reason_t reason,
                     const char *code, const char *in_message)
{
    sigv4_error_t error;
    assert_int_equal(s_verify(keys, fake, "cloudtrail-data", NULL, now_ms, &error), -1);
    assert_int_equal(error.reason, reason);
    assert_string_equal(error.code, code);
    if (!strstr(error.message, in_message))
        fail_msg("message \"%s\" lacks \"%s\"", error.message, in_message);
}

static void refuses_unsigned_incomplete_and_unknown(void **state)
{
    sigv4_keys_t *keys = s_keys();
    fake_t fake = s_put_audit_events();
    s_set_header(&fake, "Authorization", NULL);
    s_expect(keys, &fake, SIGNED_MS, SIGV4_MISSING, "MissingAuthenticationToken",
             "missing Authentication Token");

    const char *incomplete[] = {
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/cloudtrail-data/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=8d34a4856a167d9496a570cabbf3e7b6305345dd40dcf8a8"
        "80bb0287ec1e753d",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/cloudtrail-data/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=xyz",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/cloudtrail-data/"
        "aws4_request, SignedHeaders=content-type;x-amz-date, Signature=8d34a4856a167d9496a570cab"
        "bf3e7b6305345dd40dcf8a880bb0287ec1e753d",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/cloudtrail-data/"
        "aws4_request, SignedHeaders=Host;x-amz-date, Signature=8d34a4856a167d9496a570cab"
        "bf3e7b6305345dd40dcf8a880bb0287ec1e753d",
    };
    for (size_t i = 0; i < sizeof incomplete / sizeof *incomplete; i++) {
        s_set_header(&fake, "Authorization", incomplete[i]);
        s_expect(keys, &fake, SIGNED_MS, SIGV4_INCOMPLETE, "IncompleteSignature", "");
    }

    fake = s_put_audit_events();
    s_set_header(&fake, "X-Amz-Date", NULL);
    s_expect(keys, &fake, SIGNED_MS, SIGV4_INCOMPLETE, "IncompleteSignature", "X-Amz-Date");
    s_set_header(&fake, "X-Amz-Date", "20260230T112454Z");
    s_expect(keys, &fake, SIGNED_MS, SIGV4_INCOMPLETE, "IncompleteSignature", "ISO-8601");

    fake = s_put_audit_events();
    sigv4_keys_t *other = sigv4_keys_new();
    assert_int_equal(sigv4_keys_add(other, "AKIAOTHERKEY0000", SECRET, NULL, 0), 0);
    s_expect(other, &fake, SIGNED_MS, SIGV4_UNKNOWN_KEY, "UnrecognizedClientException",
             "security token included in the request is invalid");
    sigv4_keys_destroy(&other);
    sigv4_keys_destroy(&keys);
}

static void refuses_a_wrong_secret_or_changed_request(void **state)
{
    sigv4_keys_t *wrong = sigv4_keys_new();
    assert_int_equal(sigv4_keys_add(wrong, KEY_ID, "not-the-secret", NULL, 0), 0);
    fake_t fake = s_put_audit_events();
    s_expect(wrong, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
             "signature we calculated does not match");
    sigv4_keys_destroy(&wrong);

    sigv4_keys_t *keys = s_keys();
    fake.request.body = "{\"auditEvents\": []}";
    fake.request.body_len = strlen(fake.request.body);
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch", "");
    fake = s_put_audit_events();
    fake.request.query = PAE_QUERY "&externalId=x1";
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch", "");
    fake = s_put_audit_events();
    fake.request.path = "/PutAuditEvents2";
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch", "");
    fake = s_put_audit_events();
    fake.request.method = "PUT";
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch", "");
    fake = s_put_audit_events();
    s_set_header(&fake, "Content-Type", "text/plain");
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch", "");
    s_set_header(&fake, "Content-Type", NULL);
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
             "'content-type' is not in the request");

    /* Scope: another service, a date that is not X-Amz-Date's. */
    fake = s_put_audit_events();
    sigv4_error_t error;
    assert_int_equal(s_verify(keys, &fake, "cloudtrail", NULL, SIGNED_MS, &error), -1);
    assert_int_equal(error.reason, SIGV4_BAD_SIGNATURE);
    assert_non_null(strstr(error.message, "scoped to correct service: 'cloudtrail'"));
    s_set_header(&fake, "X-Amz-Date", "20261125T000000Z");
    s_expect(keys, &fake, 1795564800LL * 1000, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
             "Date in Credential scope does not match");

    /* A payload hash header that is not the body's. */
    fake = s_put_audit_events();
    s_set_header(&fake, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    s_expect(keys, &fake, SIGNED_MS, SIGV4_BAD_SIGNATURE, "XAmzContentSHA256Mismatch", "");
    sigv4_keys_destroy(&keys);
}

static void refuses_a_stale_or_future_date(void **state)
{
    sigv4_keys_t *keys = s_keys();
    fake_t fake = s_put_audit_events();
    s_expect(keys, &fake, SIGNED_MS + 20 * MINUTE_MS, SIGV4_EXPIRED, "InvalidSignatureException",
             "Signature expired: 20261124T112454Z is now earlier than 20261124T112954Z "
             "(20261124T114454Z - 15 min.)");
    s_expect(keys, &fake, SIGNED_MS - 16 * MINUTE_MS, SIGV4_EXPIRED, "InvalidSignatureException",
             "Signature not yet current");
    sigv4_keys_destroy(&keys);
}

static void s_write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void loads_a_private_credentials_file(void **state)
{
    char dir[] = "/tmp/sigv4_test.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/credentials", dir);

    s_write_file(path, "# cairn-agent senders\n\n" KEY_ID " " SECRET "\n  AKIAOTHER\tsecret2  \n",
                 0600);
    sigv4_keys_t *keys = sigv4_keys_new();
    assert_int_equal(sigv4_keys_load(keys, path, err, sizeof err), 2);
    assert_int_equal(sigv4_keys_count(keys), 2);
    fake_t fake = s_put_audit_events();
    sigv4_error_t error;
    assert_int_equal(s_verify(keys, &fake, "cloudtrail-data", NULL, SIGNED_MS, &error), 0);
    sigv4_keys_destroy(&keys);

    assert_int_equal(chmod(path, 0640), 0);
    keys = sigv4_keys_new();
    assert_int_equal(sigv4_keys_load(keys, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "mode 0640"));
    assert_non_null(strstr(err, "chmod 600"));
    sigv4_keys_destroy(&keys);

    const char *bad[][2] = {
        {"KEYONLY\n", ":1: expected ACCESS_KEY_ID SECRET"},
        {"A B\nC D E\n", ":2: expected ACCESS_KEY_ID SECRET"},
        {"A B\nA C\n", ":2: access key id A is given twice"},
        {"bad-id S\n", ":1: access key id must be"},
        {"# nothing\n", "holds no keys"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_write_file(path, bad[i][0], 0600);
        keys = sigv4_keys_new();
        assert_int_equal(sigv4_keys_load(keys, path, err, sizeof err), -1);
        if (!strstr(err, bad[i][1]))
            fail_msg("error \"%s\" lacks \"%s\"", err, bad[i][1]);
        sigv4_keys_destroy(&keys);
    }
    keys = sigv4_keys_new();
    assert_int_equal(sigv4_keys_load(keys, "/nonexistent/credentials", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    sigv4_keys_destroy(&keys);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_what_the_aws_cli_signs),
        cmocka_unit_test(canonicalizes_headers_path_and_query_like_botocore),
        cmocka_unit_test(matches_the_aws_get_vanilla_vector),
        cmocka_unit_test(refuses_unsigned_incomplete_and_unknown),
        cmocka_unit_test(refuses_a_wrong_secret_or_changed_request),
        cmocka_unit_test(refuses_a_stale_or_future_date),
        cmocka_unit_test(loads_a_private_credentials_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
