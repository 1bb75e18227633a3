/* bucket_s3_test.c: the S3 bucket's URL parsing, addressing, key encoding
 * and settings from the environment, through bucket.h. No S3 server: the
 * only request goes to a closed loopback port (the put-side tests against
 * real servers are tests/integration/test_s3_delivery.py). */
#include "bucket.h"
#include "cairn_log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const s_aws_vars[] = {
    "AWS_REGION",        "AWS_DEFAULT_REGION",    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
};

#define TEST_KEY_ID "AKIAEXAMPLEKEY123456"
#define TEST_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
#define TEST_TOKEN  "FwoGZXIvYXdzEXAMPLETOKENSECRET"

/* Every test starts with no AWS variable set. */
static int setup(void **state)
{
    for (size_t i = 0; i < sizeof s_aws_vars / sizeof s_aws_vars[0]; i++)
        unsetenv(s_aws_vars[i]);
    return 0;
}

static bucket_options_t s_options(const char *region, const char *endpoint)
{
    return (bucket_options_t){.region = region,
                              .endpoint = endpoint,
                              .access_key_id = TEST_KEY_ID,
                              .secret_access_key = TEST_SECRET};
}

/* bucket_locate of key in a new bucket, which must open. */
static void s_assert_locates(const char *url, const bucket_options_t *options, const char *key,
                             const char *expected)
{
    char err[512] = "", out[1024];
    bucket_t *bucket = bucket_new(url, options, err, sizeof err);
    if (!bucket)
        fail_msg("bucket_new(%s): %s", url, err);
    assert_int_equal(bucket_locate(bucket, key, out, sizeof out), 0);
    assert_string_equal(out, expected);
    bucket_destroy(&bucket);
}

static void s_assert_refused(const char *url, const bucket_options_t *options, const char *reason)
{
    char err[512] = "";
    bucket_t *bucket = bucket_new(url, options, err, sizeof err);
    assert_null(bucket);
    if (!strstr(err, reason))
        fail_msg("bucket_new(%s): \"%s\" does not say \"%s\"", url, err, reason);
    assert_null(strstr(err, TEST_SECRET));
}

static void urls_give_bucket_prefix_and_addressing(void **state)
{
    bucket_options_t aws = s_options("eu-west-1", NULL);
    bucket_options_t local = s_options(NULL, "http://127.0.0.1:9000/");

    /* AWS: virtual-host style, unless the name cannot be a host name. */
    s_assert_locates("s3://my-bucket", &aws, "AWSLogs/x.json.gz",
                     "https://my-bucket.s3.eu-west-1.amazonaws.com/AWSLogs/x.json.gz");
    s_assert_locates("s3://my-bucket/", &aws, "k",
                     "https://my-bucket.s3.eu-west-1.amazonaws.com/k");
    s_assert_locates("s3://my-bucket//trail/a//", &aws, "k",
                     "https://my-bucket.s3.eu-west-1.amazonaws.com/trail/a/k");
    s_assert_locates("s3://my.dotted.bucket/p", &aws, "k",
                     "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/p/k");
    s_assert_locates("s3://Upper_Case/p", &aws, "k",
                     "https://s3.eu-west-1.amazonaws.com/Upper_Case/p/k");
    bucket_options_t china = s_options("cn-north-1", NULL);
    s_assert_locates("s3://b-cn", &china, "k", "https://b-cn.s3.cn-north-1.amazonaws.com.cn/k");

    /* A custom endpoint: path style by default; asked-for styles win. */
    s_assert_locates("s3://my-bucket/logs/cairn", &local, "AWSLogs/1/x.json.gz",
                     "http://127.0.0.1:9000/my-bucket/logs/cairn/AWSLogs/1/x.json.gz");
    local.path_style = BUCKET_PATH_STYLE_OFF;
    s_assert_locates("s3://my-bucket/p", &local, "k", "http://my-bucket.127.0.0.1:9000/p/k");
    bucket_options_t base_path = s_options(NULL, "https://store.example/s3/");
    s_assert_locates("s3://my-bucket", &base_path, "k", "https://store.example/s3/my-bucket/k");
    aws.path_style = BUCKET_PATH_STYLE_ON;
    s_assert_locates("s3://my-bucket", &aws, "k", "https://s3.eu-west-1.amazonaws.com/my-bucket/k");

    /* What is refused, and why. */
    bucket_options_t vhost = s_options("eu-west-1", NULL);
    vhost.path_style = BUCKET_PATH_STYLE_OFF;
    s_assert_refused("s3://Upper_Case", &vhost, "s3_path_style = true");
    s_assert_refused("s3://", &aws, "is not a bucket name");
    s_assert_refused("s3:///prefix", &aws, "is not a bucket name");
    s_assert_refused("s3://bad bucket/p", &aws, "is not a bucket name");
    s_assert_refused("s3://../p", &aws, "is not a bucket name");
    s_assert_refused("s3://b/line\nbreak", &aws, "control characters");
    bucket_options_t bad = s_options("EU WEST", NULL);
    s_assert_refused("s3://b", &bad, "is not a region name");
    bad = s_options(NULL, "ftp://127.0.0.1:21");
    s_assert_refused("s3://b", &bad, "not an http:// or https:// URL");
    bad = s_options(NULL, "http://user:pw@127.0.0.1:9000");
    s_assert_refused("s3://b", &bad, "without user");
    bad = s_options(NULL, "http://127.0.0.1:9000/?x=1");
    s_assert_refused("s3://b", &bad, "without user, query");
    bad = s_options(NULL, "http://");
    s_assert_refused("s3://b", &bad, "expected http(s)://host");
    s_assert_refused("s3://b", NULL, "no S3 credentials");
    bad = (bucket_options_t){.access_key_id = TEST_KEY_ID};
    s_assert_refused("s3://b", &bad, "the secret access key is missing");
    bad = s_options(NULL, NULL);
    bad.session_token = "token\r\nX-Injected: 1";
    s_assert_refused("s3://b", &bad, "control characters");
    s_assert_refused("gs://b", &aws, "unsupported bucket URL");
}

static void keys_are_percent_encoded_keeping_slashes(void **state)
{
    bucket_options_t local = s_options(NULL, "http://127.0.0.1:9000");
    s_assert_locates("s3://b/trail logs/ü", &local, "AWSLogs/a b/c+d=e&f?g#h%i~j_k-l.m/é.json.gz",
                     "http://127.0.0.1:9000/b/trail%20logs/%C3%BC/"
                     "AWSLogs/a%20b/c%2Bd%3De%26f%3Fg%23h%25i~j_k-l.m/%C3%A9.json.gz");
    s_assert_locates(
        "s3://b", &local,
        "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/27/"
        "111122223333_CloudTrail_us-east-1_20261127T0305Z_Ab12Cd34Ef56Gh78.json.gz",
        "http://127.0.0.1:9000/b/AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/"
        "27/111122223333_CloudTrail_us-east-1_20261127T0305Z_Ab12Cd34Ef56Gh78.json.gz");

    char err[512], out[64];
    bucket_t *bucket = bucket_new("s3://b/p", &local, err, sizeof err);
    assert_non_null(bucket);
    assert_int_equal(bucket_locate(bucket, "", out, sizeof out), -1);
    assert_int_equal(bucket_locate(bucket, "a-key-far-too-long-for-a-64-byte-buffer/xxxxxxxxxxxxx",
                                   out, sizeof out),
                     -1);
    assert_int_equal(bucket_put(bucket, "", "x", 1, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid key"));
    assert_int_equal(bucket_put(bucket, "/abs", "x", 1, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid key"));
    bucket_destroy(&bucket);
}

static void settings_fall_back_to_the_aws_variables(void **state)
{
    char err[512] = "", out[512];
    setenv("AWS_DEFAULT_REGION", "ap-south-1", 1);
    setenv("AWS_ACCESS_KEY_ID", TEST_KEY_ID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET, 1);
    setenv("AWS_SESSION_TOKEN", TEST_TOKEN, 1);

    /* Only the variables: AWS_DEFAULT_REGION, AWS's endpoint. */
    bucket_t *bucket = bucket_new("s3://b-env/p", NULL, err, sizeof err);
    if (!bucket)
        fail_msg("%s", err);
    assert_int_equal(bucket_locate(bucket, "k", out, sizeof out), 0);
    assert_string_equal(out, "https://b-env.s3.ap-south-1.amazonaws.com/p/k");
    const char *text = bucket_describe(bucket);
    assert_non_null(strstr(text, "s3://b-env/p (region ap-south-1"));
    assert_non_null(strstr(text, "virtual-host style"));
    assert_non_null(strstr(text, "access key AKIA...3456 with a session token"));
    assert_non_null(strstr(text, "from the environment"));
    assert_null(strstr(text, TEST_KEY_ID));
    assert_null(strstr(text, TEST_SECRET));
    assert_null(strstr(text, TEST_TOKEN));
    bucket_destroy(&bucket);

    /* AWS_REGION beats AWS_DEFAULT_REGION; AWS_ENDPOINT_URL_S3 beats
     * AWS_ENDPOINT_URL, which is used when alone. */
    setenv("AWS_REGION", "eu-central-1", 1);
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7000", 1);
    s_assert_locates("s3://b", NULL, "k", "http://127.0.0.1:7000/b/k");
    setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:7001", 1);
    bucket = bucket_new("s3://b", NULL, err, sizeof err);
    assert_non_null(bucket);
    assert_int_equal(bucket_locate(bucket, "k", out, sizeof out), 0);
    assert_string_equal(out, "http://127.0.0.1:7001/b/k");
    assert_non_null(strstr(bucket_describe(bucket), "region eu-central-1"));
    assert_non_null(strstr(bucket_describe(bucket), "path style"));
    bucket_destroy(&bucket);

    /* Options beat the variables; an empty option is unset. A key from the
     * options does not take the environment's session token. */
    bucket_options_t options = {.region = "us-west-2",
                                .endpoint = "",
                                .access_key_id = "AKIAOTHERKEY99990000",
                                .secret_access_key = "other"};
    bucket = bucket_new("s3://b", &options, err, sizeof err);
    assert_non_null(bucket);
    assert_int_equal(bucket_locate(bucket, "k", out, sizeof out), 0);
    assert_string_equal(out, "http://127.0.0.1:7001/b/k"); /* endpoint "" → variable */
    text = bucket_describe(bucket);
    assert_non_null(strstr(text, "region us-west-2"));
    assert_non_null(strstr(text, "access key AKIA...0000, credentials from the configuration"));
    assert_null(strstr(text, "session token"));
    bucket_destroy(&bucket);
    options.session_token = "config-token";
    bucket = bucket_new("s3://b", &options, err, sizeof err);
    assert_non_null(bucket);
    assert_non_null(strstr(bucket_describe(bucket), "with a session token"));
    assert_null(strstr(bucket_describe(bucket), "config-token"));
    bucket_destroy(&bucket);

    /* An empty variable is unset. */
    setenv("AWS_SECRET_ACCESS_KEY", "", 1);
    s_assert_refused("s3://b", NULL, "AWS_SECRET_ACCESS_KEY");
}

static void put_to_a_closed_port_says_where_and_why(void **state)
{
    /* A loopback port that was free a moment ago: nobody listens. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &addr_len), 0);
    close(fd);
    char endpoint[64], err[512] = "";
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", ntohs(addr.sin_port));
    bucket_options_t options = s_options(NULL, endpoint);
    options.connect_timeout_ms = 2000;
    options.timeout_ms = 5000;
    bucket_t *bucket = bucket_new("s3://b/pre", &options, err, sizeof err);
    assert_non_null(bucket);
    assert_int_equal(
        bucket_put(bucket, "AWSLogs/x.json.gz", "data", 4, "application/json", err, sizeof err),
        -1);
    if (strncmp(err, "s3://b/pre/AWSLogs/x.json.gz: ", 30) != 0 || !strstr(err, "onnect"))
        fail_msg("unexpected error: %s", err);
    assert_null(strstr(err, TEST_SECRET));
    bucket_destroy(&bucket);
}

int main(void)
{
    cairn_log_level = CAIRN_LOG_WARNING;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(urls_give_bucket_prefix_and_addressing, setup),
        cmocka_unit_test_setup(keys_are_percent_encoded_keeping_slashes, setup),
        cmocka_unit_test_setup(settings_fall_back_to_the_aws_variables, setup),
        cmocka_unit_test_setup(put_to_a_closed_port_says_where_and_why, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
