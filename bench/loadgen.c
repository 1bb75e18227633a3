/* cairn-loadgen: realistic CloudTrail load for the agent's HTTP intake.
 *
 * DESIGN: each record is a pure function of (seed, thread, record number,
 * eventTime), so a run is reproducible and a duplicate is the same bytes sent
 * again: a thread remembers the (number, time) of records the agent
 * acknowledged in a small ring and re-sends one of them with probability
 * --duplicates. Only acknowledged records are re-sent, so "unique events
 * accepted" is exact: the store must end with exactly that many events.
 *
 * THREADS: --connections threads, each with one blocking keep-alive HTTP/1.1
 * socket to one target (targets are dealt round robin). They share only
 * atomics: the next request slot (for --count and the --rate pacer) and the
 * stop flag. Each thread keeps its own latency histogram; main merges them.
 *
 * Every loop is bounded: the run ends at --count events or after --seconds,
 * a request is retried (503, lost connection) for at most --retry-timeout
 * seconds, and then counted as an error. */
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LOADGEN_MAX_TARGETS      16
#define LOADGEN_MAX_CONNECTIONS  256
#define LOADGEN_MAX_BATCH        10000
#define LOADGEN_RECORD_MAX_BYTES 6144 /* generated records stay under ~4.2 KB */
#define LOADGEN_RECORD_MIN_BYTES 500
#define LOADGEN_RECORD_TOP_BYTES 4096
#define LOADGEN_RING_SIZE        4096 /* acknowledged records a thread may re-send */
#define LOADGEN_HIST_BUCKETS     2432 /* log-linear, 64 sub-buckets per power of two */
#define LOADGEN_HIST_MAX_US      ((UINT64_C(1) << 40) - 1)
#define LOADGEN_RESPONSE_MAX     16384
#define LOADGEN_ATTEMPTS_MAX     5 /* connection failures per request before giving up */

/* --- options and shared state --------------------------------------------- */

typedef struct {
    char host[64]; /* dotted IPv4 */
    int port;
    char path[256];  /* "/v1/events" unless the URL says otherwise */
    char region[32]; /* awsRegion of the records sent there */
} s_target_t;

typedef struct {
    s_target_t targets[LOADGEN_MAX_TARGETS];
    size_t target_count;
    unsigned connections;
    unsigned batch;         /* records per request */
    double rate;            /* events/s over all connections; 0 = flat out */
    uint64_t count;         /* events to send (0 = no limit) */
    double seconds;         /* stop after this long (0 = no limit) */
    double duplicates;      /* share of records that re-send an acknowledged one */
    unsigned account_count; /* distinct recipient accounts */
    uint64_t seed;
    double retry_timeout_s; /* per request */
    const char *write_file; /* JSON lines instead of HTTP */
    bool is_quiet;          /* only the JSON line */
} s_options_t;

typedef struct {
    uint64_t counts[LOADGEN_HIST_BUCKETS];
    uint64_t total;
    uint64_t max_us;
} s_hist_t;

typedef struct {
    uint64_t events_sent;     /* records in requests sent (first attempt) */
    uint64_t events_accepted; /* records in requests answered 200 */
    uint64_t events_unique;   /* fresh records in requests answered 200 */
    uint64_t duplicates_sent;
    uint64_t requests; /* requests answered 200 */
    uint64_t errors;   /* requests given up or answered other than 200/503 */
    uint64_t retries_503;
    uint64_t reconnects;
    uint64_t bytes_sent; /* record bytes, first attempts only */
} s_counts_t;

typedef struct {
    const s_options_t *options;
    atomic_uint_fast64_t next_slot;  /* request slots claimed so far */
    atomic_uint_fast64_t next_event; /* events claimed so far (for --count) */
    atomic_bool is_stopping;
    int64_t start_us;     /* monotonic */
    int64_t start_wall_s; /* first eventTime */
} s_shared_t;

typedef struct {
    uint64_t k;  /* record number within its thread */
    int64_t t_s; /* its eventTime */
} s_ring_entry_t;

typedef struct {
    s_shared_t *shared;
    unsigned index;
    const s_target_t *target;
    pthread_t thread;
    uint64_t next_k; /* next fresh record number */
    s_ring_entry_t ring[LOADGEN_RING_SIZE];
    size_t ring_count;       /* entries filled, at most LOADGEN_RING_SIZE */
    size_t ring_next;        /* where the next acknowledged record goes */
    s_ring_entry_t *pending; /* fresh records of the request in flight */
    size_t pending_count;
    uint64_t rng[4]; /* for choices that need not be reproducible */
    char *body;
    size_t body_cap;
    int fd;
    s_hist_t hist;
    s_counts_t counts;
} s_worker_t;

/* --- PRNG: splitmix64 to seed, xoshiro256** to draw ----------------------- */

static uint64_t s_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void s_rng_seed(uint64_t s[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        s[i] = s_splitmix64(&seed);
}

static inline uint64_t s_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t s_rng_next(uint64_t s[4])
{
    uint64_t result = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n). */
static uint32_t s_rng_below(uint64_t s[4], uint32_t n)
{
    return (uint32_t)(((s_rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

static double s_rng_unit(uint64_t s[4])
{
    return (double)(s_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* --- the record builder ---------------------------------------------------- */

typedef struct {
    char *p;
    size_t len;
    size_t cap;
} s_out_t;

static void s_put(s_out_t *o, const char *s, size_t n)
{
    if (o->len + n > o->cap)
        n = o->cap - o->len; /* cannot happen: budgets keep records under 4.2 KB */
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void s_puts(s_out_t *o, const char *s)
{
    s_put(o, s, strlen(s));
}

static void s_printf(s_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_printf(s_out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < o->cap - o->len ? (size_t)n : o->cap - o->len - 1;
}

static void s_hex(s_out_t *o, uint64_t r[4], int digits)
{
    static const char hex[] = "0123456789abcdef";
    char buf[64];
    for (int i = 0; i < digits && i < 64; i++)
        buf[i] = hex[s_rng_below(r, 16)];
    s_put(o, buf, (size_t)(digits < 64 ? digits : 64));
}

static void s_upper_alnum(s_out_t *o, uint64_t r[4], int n)
{
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    char buf[64];
    for (int i = 0; i < n && i < 64; i++)
        buf[i] = set[s_rng_below(r, 32)];
    s_put(o, buf, (size_t)(n < 64 ? n : 64));
}

static void s_base64ish(s_out_t *o, uint64_t r[4], int n)
{
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char buf[512];
    if (n > 512)
        n = 512;
    for (int i = 0; i < n; i++)
        buf[i] = set[s_rng_below(r, 64)];
    s_put(o, buf, (size_t)n);
}

static void s_uuid(s_out_t *o, uint64_t r[4])
{
    uint64_t hi = s_rng_next(r), lo = s_rng_next(r);
    hi = (hi & UINT64_C(0xffffffffffff0fff)) | UINT64_C(0x0000000000004000);
    lo = (lo & UINT64_C(0x3fffffffffffffff)) | UINT64_C(0x8000000000000000);
    s_printf(o, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32), (unsigned)(hi >> 16) & 0xffff,
             (unsigned)hi & 0xffff, (unsigned)(lo >> 48),
             (unsigned long long)(lo & UINT64_C(0xffffffffffff)));
}

static const char *s_pick(uint64_t r[4], const char *const *list, size_t n)
{
    return list[s_rng_below(r, (uint32_t)n)];
}
#define S_PICK(r, list) s_pick((r), (list), sizeof(list) / sizeof(list)[0])

typedef enum {
    K_EC2_DESCRIBE,
    K_EC2_RUN,
    K_EC2_MUTATE,
    K_S3_OBJECT,
    K_S3_BUCKET,
    K_IAM_POLICY,
    K_IAM_USER,
    K_STS_ASSUME,
    K_STS_READ,
    K_KMS,
    K_LAMBDA,
    K_DYNAMO,
    K_LIST,
    K_CREATE,
    K_CONSOLE_LOGIN,
} s_kind_t;

typedef struct {
    const char *source;
    const char *name;
    bool is_read_only;
    bool is_data; /* eventCategory Data instead of Management */
    s_kind_t kind;
    unsigned weight; /* how often, relative to the others */
} s_call_t;

static const s_call_t s_calls[] = {
    {"ec2.amazonaws.com", "DescribeInstances", true, false, K_EC2_DESCRIBE, 30},
    {"ec2.amazonaws.com", "DescribeSecurityGroups", true, false, K_EC2_DESCRIBE, 12},
    {"ec2.amazonaws.com", "DescribeVolumes", true, false, K_EC2_DESCRIBE, 8},
    {"ec2.amazonaws.com", "RunInstances", false, false, K_EC2_RUN, 4},
    {"ec2.amazonaws.com", "TerminateInstances", false, false, K_EC2_MUTATE, 3},
    {"ec2.amazonaws.com", "StopInstances", false, false, K_EC2_MUTATE, 2},
    {"ec2.amazonaws.com", "CreateTags", false, false, K_EC2_MUTATE, 5},
    {"ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", false, false, K_EC2_MUTATE, 2},
    {"s3.amazonaws.com", "GetObject", true, true, K_S3_OBJECT, 40},
    {"s3.amazonaws.com", "PutObject", false, true, K_S3_OBJECT, 25},
    {"s3.amazonaws.com", "DeleteObject", false, true, K_S3_OBJECT, 5},
    {"s3.amazonaws.com", "HeadObject", true, true, K_S3_OBJECT, 10},
    {"s3.amazonaws.com", "CreateBucket", false, false, K_S3_BUCKET, 1},
    {"s3.amazonaws.com", "PutBucketPolicy", false, false, K_S3_BUCKET, 1},
    {"s3.amazonaws.com", "GetBucketAcl", true, false, K_S3_BUCKET, 6},
    {"iam.amazonaws.com", "AttachRolePolicy", false, false, K_IAM_POLICY, 2},
    {"iam.amazonaws.com", "PutRolePolicy", false, false, K_IAM_POLICY, 2},
    {"iam.amazonaws.com", "CreatePolicy", false, false, K_IAM_POLICY, 1},
    {"iam.amazonaws.com", "CreateUser", false, false, K_IAM_USER, 1},
    {"iam.amazonaws.com", "GetUser", true, false, K_IAM_USER, 4},
    {"iam.amazonaws.com", "ListRoles", true, false, K_LIST, 6},
    {"sts.amazonaws.com", "AssumeRole", false, false, K_STS_ASSUME, 25},
    {"sts.amazonaws.com", "GetCallerIdentity", true, false, K_STS_READ, 12},
    {"sts.amazonaws.com", "GetSessionToken", false, false, K_STS_ASSUME, 2},
    {"kms.amazonaws.com", "Decrypt", true, false, K_KMS, 35},
    {"kms.amazonaws.com", "GenerateDataKey", true, false, K_KMS, 20},
    {"kms.amazonaws.com", "Encrypt", true, false, K_KMS, 8},
    {"lambda.amazonaws.com", "Invoke", false, true, K_LAMBDA, 15},
    {"lambda.amazonaws.com", "UpdateFunctionCode20150331v2", false, false, K_LAMBDA, 2},
    {"dynamodb.amazonaws.com", "CreateTable", false, false, K_DYNAMO, 1},
    {"dynamodb.amazonaws.com", "DescribeTable", true, false, K_DYNAMO, 8},
    {"logs.amazonaws.com", "CreateLogStream", false, false, K_CREATE, 10},
    {"logs.amazonaws.com", "DescribeLogGroups", true, false, K_LIST, 5},
    {"monitoring.amazonaws.com", "PutMetricAlarm", false, false, K_CREATE, 2},
    {"monitoring.amazonaws.com", "DescribeAlarms", true, false, K_LIST, 6},
    {"sqs.amazonaws.com", "CreateQueue", false, false, K_CREATE, 1},
    {"sns.amazonaws.com", "Publish", false, false, K_CREATE, 4},
    {"secretsmanager.amazonaws.com", "GetSecretValue", true, false, K_KMS, 10},
    {"ssm.amazonaws.com", "GetParameters", true, false, K_LIST, 12},
    {"ecr.amazonaws.com", "GetAuthorizationToken", true, false, K_STS_READ, 6},
    {"cloudtrail.amazonaws.com", "LookupEvents", true, false, K_LIST, 2},
    {"cloudformation.amazonaws.com", "DescribeStacks", true, false, K_LIST, 5},
    {"elasticloadbalancing.amazonaws.com", "DescribeTargetHealth", true, false, K_LIST, 6},
    {"route53.amazonaws.com", "ChangeResourceRecordSets", false, false, K_CREATE, 1},
    {"signin.amazonaws.com", "ConsoleLogin", false, false, K_CONSOLE_LOGIN, 2},
};
#define S_CALL_COUNT (sizeof s_calls / sizeof s_calls[0])

static unsigned s_call_weight_total;

static const char *const s_user_agents[] = {
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0 exe/x86_64.debian.12 prompt/off",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.11.2 "
    "cfg/retry-mode#legacy Botocore/1.34.69",
    "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64",
    "aws-sdk-java/2.25.16 Linux/6.1.0 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10",
    "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
    "terraform-provider-aws/5.43.0 (+https://registry.terraform.io/providers/hashicorp/aws)",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488]",
};
static const char *const s_user_names[] = {"anaya",          "bjorn", "chen.wei",
                                           "deploy-bot",     "eva",   "farid",
                                           "grafana-reader", "hana",  "ci-runner"};
static const char *const s_role_names[] = {"DeployRole",
                                           "ReadOnlyAuditor",
                                           "LambdaExecRole",
                                           "EKSNodeRole",
                                           "BackupRole",
                                           "DataPipelineRole",
                                           "AWSReservedSSO_AdministratorAccess_3f2a9c1d"};
static const char *const s_services[] = {"ec2.amazonaws.com", "lambda.amazonaws.com",
                                         "autoscaling.amazonaws.com",
                                         "cloudformation.amazonaws.com", "ecs-tasks.amazonaws.com"};
static const char *const s_buckets[] = {"prod-assets-eu", "logs-archive-2024", "ml-training-data",
                                        "terraform-state-core", "customer-uploads"};
static const char *const s_instance_types[] = {"t3.micro", "t3.large", "m6i.xlarge", "c7g.2xlarge",
                                               "r6i.4xlarge"};
static const char *const s_tag_keys[] = {"Name",
                                         "Environment",
                                         "Team",
                                         "CostCenter",
                                         "Owner",
                                         "Application",
                                         "aws:cloudformation:stack-name"};
static const char *const s_tag_values[] = {"web-frontend",      "production",        "platform",
                                           "CC-4412",           "anaya@example.com", "checkout",
                                           "core-network-stack"};
static const char *const s_ciphers[] = {"TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                                        "TLS_AES_256_GCM_SHA384"};

typedef struct {
    const char *account; /* 12 digits */
    const char *region;
    uint64_t *r;
    size_t end_at; /* stop adding list items once the record is this long */
} s_ctx_t;

static bool s_room(const s_out_t *o, const s_ctx_t *c)
{
    return o->len < c->end_at;
}

static void s_ec2_item(s_out_t *o, s_ctx_t *c, bool is_full)
{
    s_puts(o, "{\"instanceId\":\"i-0");
    s_hex(o, c->r, 16);
    s_puts(o, "\"");
    if (is_full) {
        s_printf(o,
                 ",\"imageId\":\"ami-0%08x%08x\",\"instanceState\":{\"code\":%d,\"name\":\"%s\"},"
                 "\"privateIpAddress\":\"10.%u.%u.%u\",\"instanceType\":\"%s\","
                 "\"placement\":{\"availabilityZone\":\"%sa\",\"tenancy\":\"default\"},"
                 "\"monitoring\":{\"state\":\"disabled\"}",
                 (unsigned)s_rng_next(c->r), (unsigned)s_rng_next(c->r), 0, "pending",
                 s_rng_below(c->r, 256), s_rng_below(c->r, 256), s_rng_below(c->r, 256),
                 S_PICK(c->r, s_instance_types), c->region);
    }
    s_puts(o, "}");
}

static void s_tags(s_out_t *o, s_ctx_t *c, const char *key_name, const char *value_name)
{
    for (int i = 0; s_room(o, c) && i < 40; i++) {
        if (i)
            s_puts(o, ",");
        s_printf(o, "{\"%s\":\"%s\",\"%s\":\"%s-%04x\"}", key_name, S_PICK(c->r, s_tag_keys),
                 value_name, S_PICK(c->r, s_tag_values), s_rng_below(c->r, 65536));
    }
}

static void s_request_response(s_out_t *o, s_ctx_t *c, const s_call_t *call, const char *user)
{
    uint64_t *r = c->r;
    switch (call->kind) {
    case K_EC2_DESCRIBE:
        s_puts(o, "\"requestParameters\":{\"instancesSet\":{\"items\":[");
        for (int i = 0; i < 1 + (int)s_rng_below(r, 3); i++) {
            if (i)
                s_puts(o, ",");
            s_ec2_item(o, c, false);
        }
        s_puts(o, "]},\"filterSet\":{\"items\":[");
        for (int i = 0; s_room(o, c) && i < 30; i++) {
            s_printf(o, "%s{\"name\":\"tag:%s\",\"valueSet\":{\"items\":[{\"value\":\"%s\"}]}}",
                     i ? "," : "", S_PICK(r, s_tag_keys), S_PICK(r, s_tag_values));
        }
        s_puts(o, "]}},\"responseElements\":null");
        break;
    case K_EC2_RUN: {
        s_printf(
            o,
            "\"requestParameters\":{\"instancesSet\":{\"items\":[{\"imageId\":\"ami-0%08x\","
            "\"minCount\":1,\"maxCount\":%u}]},\"instanceType\":\"%s\",\"subnetId\":\"subnet-0",
            (unsigned)s_rng_next(r), 1 + s_rng_below(r, 4), S_PICK(r, s_instance_types));
        s_hex(o, r, 16);
        s_puts(o,
               "\",\"tagSpecificationSet\":{\"items\":[{\"resourceType\":\"instance\",\"tags\":[");
        size_t end_at = c->end_at;
        c->end_at -= c->end_at > o->len ? (c->end_at - o->len) / 2 : 0; /* half for the reply */
        s_tags(o, c, "key", "value");
        c->end_at = end_at;
        s_puts(o, "]}]}},\"responseElements\":{\"requestId\":\"");
        s_uuid(o, r);
        s_printf(
            o,
            "\",\"reservationId\":\"r-0%08x%08x\",\"ownerId\":\"%s\",\"instancesSet\":{\"items\":[",
            (unsigned)s_rng_next(r), (unsigned)s_rng_next(r), c->account);
        for (int i = 0; i == 0 || (s_room(o, c) && i < 8); i++) {
            if (i)
                s_puts(o, ",");
            s_ec2_item(o, c, true);
        }
        s_puts(o, "]}}");
        break;
    }
    case K_EC2_MUTATE:
        s_puts(o, "\"requestParameters\":{\"instancesSet\":{\"items\":[");
        for (int i = 0; i == 0 || (s_room(o, c) && i < 20); i++) {
            if (i)
                s_puts(o, ",");
            s_ec2_item(o, c, false);
        }
        s_puts(o, "]},\"tagSet\":{\"items\":[");
        s_tags(o, c, "key", "value");
        s_printf(o, "]}},\"responseElements\":{\"requestId\":\"");
        s_uuid(o, r);
        s_puts(o, "\",\"_return\":true}");
        break;
    case K_S3_OBJECT: {
        const char *bucket = S_PICK(r, s_buckets);
        s_printf(o,
                 "\"requestParameters\":{\"bucketName\":\"%s\",\"Host\":\"%s.s3.%s.amazonaws.com\","
                 "\"key\":\"data/%04u/%02u/",
                 bucket, bucket, c->region, 2020 + s_rng_below(r, 6), 1 + s_rng_below(r, 12));
        s_hex(o, r, 24);
        s_puts(o, ".parquet\"");
        if (s_room(o, c)) {
            s_puts(o, ",\"x-amz-tagging\":\"");
            for (int i = 0; s_room(o, c) && i < 20; i++)
                s_printf(o, "%s%s=%s", i ? "&" : "", S_PICK(r, s_tag_keys),
                         S_PICK(r, s_tag_values));
            s_puts(o, "\"");
        }
        s_puts(
            o,
            "},\"responseElements\":null,\"additionalEventData\":{\"SignatureVersion\":\"SigV4\","
            "\"CipherSuite\":\"ECDHE-RSA-AES128-GCM-SHA256\",\"bytesTransferredIn\":");
        s_printf(o,
                 "%u,\"bytesTransferredOut\":%u,\"AuthenticationMethod\":\"AuthHeader\","
                 "\"x-amz-id-2\":\"",
                 s_rng_below(r, 1 << 20), s_rng_below(r, 1 << 24));
        s_base64ish(o, r, 76);
        s_puts(o, "\"}");
        break;
    }
    case K_S3_BUCKET: {
        const char *bucket = S_PICK(r, s_buckets);
        s_printf(o, "\"requestParameters\":{\"bucketName\":\"%s\",\"Host\":\"s3.%s.amazonaws.com\"",
                 bucket, c->region);
        if (strcmp(call->name, "PutBucketPolicy") == 0) {
            s_puts(o, ",\"bucketPolicy\":{\"Version\":\"2012-10-17\",\"Statement\":[");
            for (int i = 0; i == 0 || (s_room(o, c) && i < 12); i++)
                s_printf(o,
                         "%s{\"Sid\":\"Stmt%u\",\"Effect\":\"%s\",\"Principal\":{\"AWS\":"
                         "\"arn:aws:iam::%s:root\"},\"Action\":[\"s3:GetObject\",\"s3:PutObject\"],"
                         "\"Resource\":\"arn:aws:s3:::%s/*\"}",
                         i ? "," : "", s_rng_below(r, 100000), s_rng_below(r, 4) ? "Allow" : "Deny",
                         c->account, bucket);
            s_puts(o, "]}");
        } else if (s_room(o, c)) {
            s_puts(o, ",\"acl\":[");
            s_tags(o, c, "grantee", "permission");
            s_puts(o, "]");
        }
        s_puts(
            o,
            "},\"responseElements\":null,\"additionalEventData\":{\"SignatureVersion\":\"SigV4\","
            "\"AuthenticationMethod\":\"AuthHeader\"}");
        break;
    }
    case K_IAM_POLICY: {
        const char *role = S_PICK(r, s_role_names);
        s_printf(o, "\"requestParameters\":{\"roleName\":\"%s\",\"policyName\":\"inline-%04x\"",
                 role, s_rng_below(r, 65536));
        /* IAM reports the policy document as one JSON-escaped string. */
        s_puts(o, ",\"policyDocument\":\"{\\n  \\\"Version\\\": \\\"2012-10-17\\\",\\n  "
                  "\\\"Statement\\\": [");
        for (int i = 0; i == 0 || (s_room(o, c) && i < 16); i++)
            s_printf(o,
                     "%s{\\n    \\\"Effect\\\": \\\"Allow\\\",\\n    \\\"Action\\\": "
                     "[\\\"%s:Get*\\\", \\\"%s:List*\\\"],\\n    \\\"Resource\\\": "
                     "\\\"arn:aws:%s:%s:%s:*\\\"\\n  }",
                     i ? ", " : "", i % 2 ? "s3" : "dynamodb", i % 2 ? "s3" : "dynamodb",
                     i % 2 ? "s3" : "dynamodb", c->region, c->account);
        s_puts(o, "]\\n}\"},\"responseElements\":null");
        break;
    }
    case K_IAM_USER:
        s_printf(o, "\"requestParameters\":{\"userName\":\"%s\",\"tags\":[", user);
        s_tags(o, c, "key", "value");
        s_printf(o,
                 "]},\"responseElements\":{\"user\":{\"path\":\"/\",\"userName\":\"%s\","
                 "\"userId\":\"AIDA",
                 user);
        s_upper_alnum(o, r, 17);
        s_printf(
            o,
            "\",\"arn\":\"arn:aws:iam::%s:user/%s\",\"createDate\":\"Mar 4, 2025 10:02:37 AM\"}}",
            c->account, user);
        break;
    case K_STS_ASSUME: {
        const char *role = S_PICK(r, s_role_names);
        s_printf(o,
                 "\"requestParameters\":{\"roleArn\":\"arn:aws:iam::%s:role/%s\","
                 "\"roleSessionName\":\"session-%08x\",\"durationSeconds\":3600",
                 c->account, role, (unsigned)s_rng_next(r));
        if (s_room(o, c)) {
            s_puts(o, ",\"tags\":[");
            c->end_at -= 600; /* keep room for the credentials */
            s_tags(o, c, "key", "value");
            c->end_at += 600;
            s_puts(o, "]");
        }
        s_puts(o, "},\"responseElements\":{\"credentials\":{\"accessKeyId\":\"ASIA");
        s_upper_alnum(o, r, 16);
        s_puts(o, "\",\"sessionToken\":\"IQoJb3JpZ2luX2VjE");
        s_base64ish(o, r, 360);
        s_printf(o, "\",\"expiration\":\"Mar 4, 2025, 11:02:37 AM\"},\"assumedRoleUser\":{"
                    "\"assumedRoleId\":\"AROA");
        s_upper_alnum(o, r, 17);
        s_printf(o, ":session\",\"arn\":\"arn:aws:sts::%s:assumed-role/%s/session\"}}", c->account,
                 role);
        break;
    }
    case K_STS_READ:
        s_puts(o, "\"requestParameters\":null,\"responseElements\":null");
        break;
    case K_KMS:
        s_puts(o, "\"requestParameters\":{\"encryptionAlgorithm\":\"SYMMETRIC_DEFAULT\",");
        s_printf(o, "\"keyId\":\"arn:aws:kms:%s:%s:key/", c->region, c->account);
        s_uuid(o, r);
        s_puts(o, "\",\"encryptionContext\":{");
        for (int i = 0; i == 0 || (s_room(o, c) && i < 24); i++)
            s_printf(o, "%s\"aws:%s:arn\":\"arn:aws:%s:%s:%s:%s-%06x\"", i ? "," : "",
                     i % 3 ? "s3" : "lambda", i % 3 ? "s3" : "lambda", c->region, c->account,
                     S_PICK(r, s_tag_values), s_rng_below(r, 1 << 24));
        s_puts(o, "}},\"responseElements\":null");
        break;
    case K_LAMBDA:
        s_printf(
            o,
            "\"requestParameters\":{\"functionName\":\"arn:aws:lambda:%s:%s:function:%s-%04x\","
            "\"invocationType\":\"RequestResponse\",\"logType\":\"None\"",
            c->region, c->account, S_PICK(r, s_tag_values), s_rng_below(r, 65536));
        if (s_room(o, c)) {
            s_puts(o, ",\"environment\":{\"variables\":{");
            for (int i = 0; s_room(o, c) && i < 24; i++)
                s_printf(o, "%s\"VAR_%u\":\"HIDDEN_DUE_TO_SECURITY_REASONS\"", i ? "," : "", i);
            s_puts(o, "}}");
        }
        s_puts(o, "},\"responseElements\":null");
        break;
    case K_DYNAMO:
        s_printf(o, "\"requestParameters\":{\"tableName\":\"%s-%04x\",\"attributeDefinitions\":[",
                 S_PICK(r, s_tag_values), s_rng_below(r, 65536));
        for (int i = 0; i == 0 || (s_room(o, c) && i < 20); i++)
            s_printf(o, "%s{\"attributeName\":\"attr%u\",\"attributeType\":\"%s\"}", i ? "," : "",
                     i, i % 2 ? "S" : "N");
        s_puts(o, "]},\"responseElements\":null");
        break;
    case K_LIST:
        s_printf(o, "\"requestParameters\":{\"maxResults\":%u", 50 + s_rng_below(r, 950));
        if (s_room(o, c)) {
            s_puts(o, ",\"nextToken\":\"");
            size_t room = c->end_at > o->len ? c->end_at - o->len : 0;
            s_base64ish(o, r, (int)(room < 400 ? room : 400));
            s_puts(o, "\"");
        }
        if (s_room(o, c)) {
            s_puts(o, ",\"names\":[");
            for (int i = 0; s_room(o, c) && i < 40; i++)
                s_printf(o, "%s\"/%s/%s/param-%04x\"", i ? "," : "", S_PICK(r, s_tag_values),
                         S_PICK(r, s_tag_keys), s_rng_below(r, 65536));
            s_puts(o, "]");
        }
        s_puts(o, "},\"responseElements\":null");
        break;
    case K_CREATE: {
        s_printf(o, "\"requestParameters\":{\"name\":\"%s-%06x\",\"tags\":[",
                 S_PICK(r, s_tag_values), s_rng_below(r, 1 << 24));
        size_t end_at = c->end_at;
        c->end_at -= c->end_at > o->len ? (c->end_at - o->len) / 3 : 0; /* a third for the reply */
        s_tags(o, c, "Key", "Value");
        c->end_at = end_at;
        s_printf(o,
                 "]},\"responseElements\":{\"arn\":\"arn:aws:%.*s:%s:%s:%s-%06x\",\"attributes\":{",
                 (int)strcspn(call->source, "."), call->source, c->region, c->account,
                 S_PICK(r, s_tag_values), s_rng_below(r, 1 << 24));
        for (int i = 0; s_room(o, c) && i < 16; i++)
            s_printf(o, "%s\"%s\":\"%s\"", i ? "," : "", S_PICK(r, s_tag_keys),
                     S_PICK(r, s_tag_values));
        s_puts(o, "}}");
        break;
    }
    case K_CONSOLE_LOGIN:
        s_puts(
            o,
            "\"requestParameters\":null,\"responseElements\":{\"ConsoleLogin\":\"Success\"},"
            "\"additionalEventData\":{\"LoginTo\":\"https://console.aws.amazon.com/console/home\","
            "\"MobileVersion\":\"No\",\"MFAUsed\":\"Yes\"}");
        break;
    }
}

/* The resources array some calls have. */
static void s_resources(s_out_t *o, s_ctx_t *c, const s_call_t *call)
{
    uint64_t *r = c->r;
    switch (call->kind) {
    case K_S3_OBJECT:
    case K_S3_BUCKET: {
        const char *bucket = S_PICK(r, s_buckets);
        s_printf(o,
                 ",\"resources\":[{\"type\":\"AWS::S3::Object\",\"ARN\":\"arn:aws:s3:::%s/data/"
                 "obj-%06x\"},"
                 "{\"accountId\":\"%s\",\"type\":\"AWS::S3::Bucket\",\"ARN\":\"arn:aws:s3:::%s\"}]",
                 bucket, s_rng_below(r, 1 << 24), c->account, bucket);
        break;
    }
    case K_KMS:
        s_printf(o,
                 ",\"resources\":[{\"accountId\":\"%s\",\"type\":\"AWS::KMS::Key\",\"ARN\":"
                 "\"arn:aws:kms:%s:%s:key/",
                 c->account, c->region, c->account);
        s_uuid(o, r);
        s_puts(o, "\"}]");
        break;
    case K_STS_ASSUME:
        s_printf(o,
                 ",\"resources\":[{\"accountId\":\"%s\",\"type\":\"AWS::IAM::Role\",\"ARN\":"
                 "\"arn:aws:iam::%s:role/%s\"}]",
                 c->account, c->account, S_PICK(r, s_role_names));
        break;
    case K_LAMBDA:
        s_printf(o,
                 ",\"resources\":[{\"accountId\":\"%s\",\"type\":\"AWS::Lambda::Function\",\"ARN\":"
                 "\"arn:aws:lambda:%s:%s:function:%s\"}]",
                 c->account, c->region, c->account, S_PICK(r, s_tag_values));
        break;
    default:
        break;
    }
}

/* Writes record (thread, k) with eventTime t_s into out[cap]; returns its length. */
static size_t s_record_write(uint64_t seed, unsigned thread, uint64_t k, int64_t t_s,
                             const char *region, unsigned account_count, char *out, size_t cap)
{
    uint64_t r[4];
    s_rng_seed(r, seed ^ ((uint64_t)thread << 48) ^ (k * UINT64_C(0x9e3779b97f4a7c15)));
    s_out_t o = {out, 0, cap};

    /* Target size: 500 B plus an exponential tail (mean ~800 B), capped at
     * 4 KB: about 1.3 KB on average, as CloudTrail's mix is. */
    double u = s_rng_unit(r);
    double target = 300.0 - 500.0 * log(1.0 - u * 0.999);
    if (target > LOADGEN_RECORD_TOP_BYTES)
        target = LOADGEN_RECORD_TOP_BYTES;
    const size_t tail_bytes = 700; /* what follows the request/response, about */

    unsigned pick = s_rng_below(r, s_call_weight_total);
    const s_call_t *call = &s_calls[0];
    for (size_t i = 0; i < S_CALL_COUNT; i++) {
        if (pick < s_calls[i].weight) {
            call = &s_calls[i];
            break;
        }
        pick -= s_calls[i].weight;
    }
    char account[16];
    snprintf(account, sizeof account, "%012llu",
             111122223333ULL + 111111111111ULL * (unsigned long long)s_rng_below(r, account_count));
    s_ctx_t c = {account, region, r, 0};

    unsigned id_pick = s_rng_below(r, 100);
    const char *user = S_PICK(r, s_user_names);
    const char *role = S_PICK(r, s_role_names);
    const char *service = S_PICK(r, s_services);
    bool is_service = id_pick >= 85 && call->kind != K_CONSOLE_LOGIN;
    char tm[21];
    cairn_time_format_iso8601(t_s * 1000, tm);

    s_puts(&o, "{\"eventVersion\":\"1.11\",\"userIdentity\":{\"type\":\"");
    if (is_service) {
        s_printf(&o, "AWSService\",\"invokedBy\":\"%s\"}", service);
    } else if (id_pick < 30 || call->kind == K_CONSOLE_LOGIN) {
        s_puts(&o, "IAMUser\",\"principalId\":\"AIDA");
        s_upper_alnum(&o, r, 17);
        s_printf(
            &o,
            "\",\"arn\":\"arn:aws:iam::%s:user/%s\",\"accountId\":\"%s\",\"accessKeyId\":\"AKIA",
            account, user, account);
        s_upper_alnum(&o, r, 16);
        s_printf(&o, "\",\"userName\":\"%s\"}", user);
    } else if (id_pick < 80) {
        char session[24];
        snprintf(session, sizeof session, "%s-%04x", user, s_rng_below(r, 65536));
        char role_id[24];
        s_out_t rid = {role_id, 0, sizeof role_id};
        s_upper_alnum(&rid, r, 17);
        role_id[rid.len] = '\0';
        s_printf(
            &o,
            "AssumedRole\",\"principalId\":\"AROA%s:%s\",\"arn\":\"arn:aws:sts::%s:assumed-role/"
            "%s/%s\",\"accountId\":\"%s\",\"accessKeyId\":\"ASIA",
            role_id, session, account, role, session, account);
        s_upper_alnum(&o, r, 16);
        s_printf(&o,
                 "\",\"sessionContext\":{\"sessionIssuer\":{\"type\":\"Role\",\"principalId\":"
                 "\"AROA%s\",\"arn\":\"arn:aws:iam::%s:role/%s\",\"accountId\":\"%s\",\"userName\":"
                 "\"%s\"},\"webIdFederationData\":{},\"attributes\":{\"creationDate\":\"%s\","
                 "\"mfaAuthenticated\":\"%s\"}}",
                 role_id, account, role, account, role, tm, s_rng_below(r, 2) ? "true" : "false");
        if (s_rng_below(r, 4) == 0)
            s_printf(&o, ",\"invokedBy\":\"%s\"", service);
        s_puts(&o, "}");
    } else {
        s_printf(&o,
                 "Root\",\"principalId\":\"%s\",\"arn\":\"arn:aws:iam::%s:root\",\"accountId\":"
                 "\"%s\",\"accessKeyId\":\"ASIA",
                 account, account, account);
        s_upper_alnum(&o, r, 16);
        s_puts(&o, "\"}");
    }
    s_printf(
        &o,
        ",\"eventTime\":\"%s\",\"eventSource\":\"%s\",\"eventName\":\"%s\",\"awsRegion\":\"%s\",",
        tm, call->source, call->name, region);
    if (is_service)
        s_printf(&o, "\"sourceIPAddress\":\"%s\",\"userAgent\":\"%s\",", service, service);
    else
        s_printf(&o, "\"sourceIPAddress\":\"%u.%u.%u.%u\",\"userAgent\":\"%s\",",
                 198 + s_rng_below(r, 6), s_rng_below(r, 256), s_rng_below(r, 256),
                 1 + s_rng_below(r, 254), S_PICK(r, s_user_agents));
    bool is_error = s_rng_below(r, 100) < 4;
    if (is_error)
        s_puts(&o, "\"errorCode\":\"AccessDenied\",\"errorMessage\":\"User is not authorized to "
                   "perform this operation because no identity-based policy allows it\",");
    c.end_at = (size_t)target > o.len + tail_bytes ? (size_t)target - tail_bytes : o.len;
    s_request_response(&o, &c, call, user);
    s_puts(&o, ",\"requestID\":\"");
    s_uuid(&o, r);
    s_puts(&o, "\",\"eventID\":\"");
    s_uuid(&o, r);
    s_printf(&o, "\",\"readOnly\":%s", call->is_read_only ? "true" : "false");
    s_resources(&o, &c, call);
    s_printf(&o,
             ",\"eventType\":\"%s\",\"managementEvent\":%s,\"recipientAccountId\":\"%s\","
             "\"eventCategory\":\"%s\"",
             call->kind == K_CONSOLE_LOGIN ? "AwsConsoleSignIn" : "AwsApiCall",
             call->is_data ? "false" : "true", account, call->is_data ? "Data" : "Management");
    if (!is_service)
        s_printf(&o,
                 ",\"tlsDetails\":{\"tlsVersion\":\"TLSv1.3\",\"cipherSuite\":\"%s\","
                 "\"clientProvidedHostHeader\":\"%.*s.%s.amazonaws.com\"}",
                 S_PICK(r, s_ciphers), (int)strcspn(call->source, "."), call->source, region);
    s_puts(&o, "}");
    return o.len;
}

/* --- histogram ------------------------------------------------------------- */

static size_t s_hist_index(uint64_t us)
{
    if (us > LOADGEN_HIST_MAX_US)
        us = LOADGEN_HIST_MAX_US;
    if (us < 128)
        return (size_t)us;
    int shift = (63 - __builtin_clzll(us)) - 6; /* >= 1 */
    return 128 + (size_t)(shift - 1) * 64 + (size_t)((us >> shift) - 64);
}

/* The middle of bucket i, in microseconds. */
static double s_hist_value(size_t i)
{
    if (i < 128)
        return (double)i;
    unsigned shift = (unsigned)((i - 128) / 64 + 1);
    uint64_t low = (uint64_t)((i - 128) % 64 + 64) << shift;
    return (double)low + (double)((UINT64_C(1) << shift) - 1) / 2.0;
}

static void s_hist_record(s_hist_t *h, uint64_t us)
{
    h->counts[s_hist_index(us)]++;
    h->total++;
    if (us > h->max_us)
        h->max_us = us;
}

static void s_hist_merge(s_hist_t *into, const s_hist_t *from)
{
    for (size_t i = 0; i < LOADGEN_HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    if (from->max_us > into->max_us)
        into->max_us = from->max_us;
}

/* The q-quantile (0..1) in milliseconds; 0 when empty. */
static double s_hist_quantile_ms(const s_hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->total);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < LOADGEN_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double v = s_hist_value(i);
            return (v > (double)h->max_us ? (double)h->max_us : v) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

/* --- HTTP over a blocking socket -------------------------------------------- */

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void s_sleep_us(int64_t us)
{
    if (us <= 0)
        return;
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int s_connect(const s_target_t *t)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->port)};
    inet_pton(AF_INET, t->host, &addr.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {30, 0}; /* a stuck agent ends the request, not the run */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int s_write_all(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Value of header name in the head (which ends at "\r\n\r\n"), or NULL. */
static const char *s_header(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            p += n + 1;
            while (*p == ' ')
                p++;
            return p;
        }
    }
    return NULL;
}

typedef struct {
    int status;
    int retry_after_s;
    bool is_closing;
    long accepted; /* "accepted" of the body, -1 if absent */
} s_reply_t;

/* Sends one POST and reads the reply. Returns 0, or -1 if the connection failed. */
static int s_post(int fd, const s_target_t *t, const char *body, size_t len, s_reply_t *reply)
{
    char head[512];
    int head_len = snprintf(head, sizeof head,
                            "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zu\r\n\r\n",
                            t->path, t->host, t->port, len);
    struct iovec iov[2] = {{head, (size_t)head_len}, {(void *)body, len}};
    if (s_write_all(fd, iov, 2) != 0)
        return -1;
    char buf[LOADGEN_RESPONSE_MAX + 1];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got == LOADGEN_RESPONSE_MAX)
            return -1;
        ssize_t n = recv(fd, buf + got, LOADGEN_RESPONSE_MAX - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head_bytes = (size_t)(end - buf) + 4;
    end[2] = '\0'; /* keep the last header's "\r\n" for s_header */
    if (strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    reply->status = atoi(buf + 9);
    const char *v = s_header(buf, "Content-Length");
    size_t body_len = v ? strtoul(v, NULL, 10) : 0;
    v = s_header(buf, "Retry-After");
    reply->retry_after_s = v ? atoi(v) : 0;
    v = s_header(buf, "Connection");
    reply->is_closing = v && strncasecmp(v, "close", 5) == 0;
    if (head_bytes + body_len > LOADGEN_RESPONSE_MAX)
        return -1;
    while (got < head_bytes + body_len) {
        ssize_t n = recv(fd, buf + got, head_bytes + body_len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    buf[head_bytes + body_len] = '\0';
    const char *a = strstr(buf + head_bytes, "\"accepted\":");
    reply->accepted = a ? strtol(a + 11, NULL, 10) : -1;
    return 0;
}

/* --- workers ------------------------------------------------------------- */

/* Builds the body of the next request in w->body; returns its length. */
static size_t s_build_body(s_worker_t *w, size_t n, int64_t t_s, uint64_t *dup_count)
{
    const s_options_t *opt = w->shared->options;
    size_t len = 0;
    w->body[len++] = '[';
    w->pending_count = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            w->body[len++] = ',';
        s_ring_entry_t e;
        bool is_dup =
            w->ring_count > 0 && opt->duplicates > 0 && s_rng_unit(w->rng) < opt->duplicates;
        if (is_dup) {
            e = w->ring[s_rng_below(w->rng, (uint32_t)w->ring_count)];
            (*dup_count)++;
        } else {
            e.k = w->next_k++;
            e.t_s = t_s;
            w->pending[w->pending_count++] = e;
        }
        len += s_record_write(opt->seed, w->index, e.k, e.t_s, w->target->region,
                              opt->account_count, w->body + len, LOADGEN_RECORD_MAX_BYTES);
    }
    w->body[len++] = ']';
    return len;
}

static void s_remember_accepted(s_worker_t *w)
{
    for (size_t i = 0; i < w->pending_count; i++) {
        w->ring[w->ring_next] = w->pending[i];
        w->ring_next = (w->ring_next + 1) % LOADGEN_RING_SIZE;
        if (w->ring_count < LOADGEN_RING_SIZE)
            w->ring_count++;
    }
}

/* Sends one request until it is answered (200, or a final error) or its
 * retry time runs out. Returns the HTTP status, or -1. */
static int s_send_request(s_worker_t *w, const char *body, size_t len, size_t n)
{
    const s_options_t *opt = w->shared->options;
    int64_t give_up_us = s_now_us() + (int64_t)(opt->retry_timeout_s * 1e6);
    int attempts = 0;
    for (;;) {
        if (w->fd < 0) {
            w->fd = s_connect(w->target);
            if (w->fd < 0) {
                if (++attempts >= LOADGEN_ATTEMPTS_MAX || s_now_us() > give_up_us)
                    return -1;
                s_sleep_us(200000);
                continue;
            }
        }
        s_reply_t reply = {0};
        if (s_post(w->fd, w->target, body, len, &reply) != 0) {
            close(w->fd);
            w->fd = -1;
            w->counts.reconnects++;
            if (++attempts >= LOADGEN_ATTEMPTS_MAX || s_now_us() > give_up_us)
                return -1;
            continue;
        }
        if (reply.is_closing) {
            close(w->fd);
            w->fd = -1;
        }
        if (reply.status == 200 && reply.accepted != (long)n)
            cairn_log_warning("loadgen[%u]: 200 with accepted %ld for %zu records", w->index,
                              reply.accepted, n);
        if (reply.status != 503)
            return reply.status;
        w->counts.retries_503++;
        if (s_now_us() > give_up_us)
            return 503;
        int64_t wait_us = reply.retry_after_s > 0 ? (int64_t)reply.retry_after_s * 1000000 : 100000;
        s_sleep_us(wait_us > 1000000 ? 1000000 : wait_us);
    }
}

static void *s_worker_run(void *arg)
{
    s_worker_t *w = arg;
    s_shared_t *sh = w->shared;
    const s_options_t *opt = sh->options;
    int64_t end_us = opt->seconds > 0 ? sh->start_us + (int64_t)(opt->seconds * 1e6) : INT64_MAX;
    double request_interval_us = opt->rate > 0 ? (double)opt->batch * 1e6 / opt->rate : 0;
    while (!atomic_load(&sh->is_stopping)) {
        uint64_t slot = atomic_fetch_add(&sh->next_slot, 1);
        if (request_interval_us > 0)
            s_sleep_us(sh->start_us + (int64_t)((double)slot * request_interval_us) - s_now_us());
        int64_t now = s_now_us();
        if (now >= end_us)
            break;
        size_t n = opt->batch;
        if (opt->count > 0) {
            uint64_t first = atomic_fetch_add(&sh->next_event, n);
            if (first >= opt->count)
                break;
            if (first + n > opt->count)
                n = (size_t)(opt->count - first);
        }
        uint64_t dups = 0;
        int64_t t_s = sh->start_wall_s + (now - sh->start_us) / 1000000;
        size_t len = s_build_body(w, n, t_s, &dups);
        w->counts.events_sent += n;
        w->counts.duplicates_sent += dups;
        w->counts.bytes_sent += len - (n + 1); /* without '[', ']' and commas */
        int64_t sent_us = s_now_us();
        int status = s_send_request(w, w->body, len, n);
        if (status == 200) {
            s_hist_record(&w->hist, (uint64_t)(s_now_us() - sent_us));
            w->counts.requests++;
            w->counts.events_accepted += n;
            w->counts.events_unique += w->pending_count;
            s_remember_accepted(w);
        } else {
            w->counts.errors++;
            if (w->counts.errors <= 5)
                cairn_log_warning("loadgen[%u]: request of %zu records to %s:%d failed (%s %d)",
                                  w->index, n, w->target->host, w->target->port,
                                  status < 0 ? "connection" : "HTTP", status);
        }
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    return NULL;
}

/* --- JSON-lines file mode --------------------------------------------------- */

static int s_write_file(const s_options_t *opt, s_counts_t *counts, double *seconds)
{
    FILE *f = fopen(opt->write_file, "w");
    if (!f) {
        cairn_log_error("loadgen: cannot write %s: %s", opt->write_file, strerror(errno));
        return -1;
    }
    s_worker_t *w = cairn_calloc(1, sizeof *w);
    s_shared_t sh = {.options = opt};
    w->shared = &sh;
    w->target = &opt->targets[0];
    w->pending = cairn_calloc(1, sizeof *w->pending);
    s_rng_seed(w->rng, opt->seed ^ UINT64_C(0x5bd1e995));
    char *rec = cairn_malloc(LOADGEN_RECORD_MAX_BYTES + 1);
    int64_t start_us = s_now_us(),
            end_us = opt->seconds > 0 ? start_us + (int64_t)(opt->seconds * 1e6) : INT64_MAX;
    int64_t start_wall_s = cairn_time_now_ms() / 1000;
    uint64_t limit = opt->count > 0 ? opt->count : UINT64_MAX;
    int rc = 0;
    for (uint64_t i = 0; i < limit && rc == 0; i++) {
        if ((i & 1023) == 0 && s_now_us() >= end_us)
            break;
        s_ring_entry_t e;
        bool is_dup =
            w->ring_count > 0 && opt->duplicates > 0 && s_rng_unit(w->rng) < opt->duplicates;
        if (is_dup) {
            e = w->ring[s_rng_below(w->rng, (uint32_t)w->ring_count)];
            counts->duplicates_sent++;
        } else {
            e.k = w->next_k++;
            e.t_s = start_wall_s + (s_now_us() - start_us) / 1000000;
            w->pending[0] = e;
            w->pending_count = 1;
            s_remember_accepted(w);
            counts->events_unique++;
        }
        size_t len = s_record_write(opt->seed, 0, e.k, e.t_s, w->target->region, opt->account_count,
                                    rec, LOADGEN_RECORD_MAX_BYTES);
        rec[len] = '\n';
        if (fwrite(rec, 1, len + 1, f) != len + 1)
            rc = -1;
        counts->events_sent++;
        counts->events_accepted++;
        counts->bytes_sent += len;
    }
    if (fclose(f) != 0 || rc != 0) {
        cairn_log_error("loadgen: writing %s failed: %s", opt->write_file, strerror(errno));
        rc = -1;
    }
    *seconds = (double)(s_now_us() - start_us) / 1e6;
    free(rec);
    free(w->pending);
    free(w);
    return rc;
}

/* --- main ------------------------------------------------------------------- */

static void s_usage(FILE *out)
{
    fprintf(out, "Usage: cairn-loadgen [options] --url URL [--url URL ...]\n"
                 "       cairn-loadgen [options] --write-file PATH\n"
                 "\n"
                 "Sends realistic CloudTrail records to cairn agents (POST URL, a JSON array per\n"
                 "request) over HTTP/1.1 keep-alive, or writes them as JSON lines. Prints a\n"
                 "summary, then one JSON line: events_sent, events_accepted, events_unique,\n"
                 "duplicates_sent, requests, errors, rate, p50_ms, p99_ms, max_ms, seconds,\n"
                 "avg_record_bytes, cpu_s (its own).\n"
                 "\n"
                 "Options:\n"
                 "  -u, --url URL          agent intake, http://IPv4:PORT[/path] (path default\n"
                 "                         /v1/events); repeat for several agents: connections\n"
                 "                         are dealt to them round robin\n"
                 "  -R, --region LIST      awsRegion of each URL's records, comma-separated in\n"
                 "                         --url order (default us-east-1)\n"
                 "  -c, --connections N    connections (threads), default 4\n"
                 "  -b, --batch N          records per request, default 100\n"
                 "  -r, --rate N           events/s over all connections, paced; 0 = flat out\n"
                 "                         (default)\n"
                 "  -n, --count N          stop after N events (default 100000 unless --seconds)\n"
                 "  -s, --seconds S        stop after S seconds\n"
                 "  -d, --duplicates F     share (0..1) of records that are exact re-sends of\n"
                 "                         records already acknowledged, default 0\n"
                 "  -a, --accounts N       distinct recipient accounts, default 3\n"
                 "  -S, --seed N           seed of the record generator, default 1\n"
                 "      --retry-timeout S  give a request up after S seconds of 503s or lost\n"
                 "                         connections (default 120)\n"
                 "  -w, --write-file PATH  write JSON lines to PATH instead of sending\n"
                 "  -q, --quiet            print only the JSON line\n"
                 "  -h, --help             show this help\n");
}

static int s_parse_url(const char *url, s_target_t *t)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    const char *colon = strchr(p, ':');
    if (!colon || (size_t)(colon - p) >= sizeof t->host)
        return -1;
    memcpy(t->host, p, (size_t)(colon - p));
    t->host[colon - p] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, t->host, &a) != 1)
        return -1;
    char *rest;
    long port = strtol(colon + 1, &rest, 10);
    if (port <= 0 || port > 65535)
        return -1;
    t->port = (int)port;
    if (*rest == '\0' || strcmp(rest, "/") == 0)
        snprintf(t->path, sizeof t->path, "/v1/events");
    else if (*rest == '/' && strlen(rest) < sizeof t->path)
        snprintf(t->path, sizeof t->path, "%s", rest);
    else
        return -1;
    snprintf(t->region, sizeof t->region, "us-east-1");
    return 0;
}

static int s_parse_options(int argc, char **argv, s_options_t *opt)
{
    static const struct option longopts[] = {{"url", required_argument, NULL, 'u'},
                                             {"region", required_argument, NULL, 'R'},
                                             {"connections", required_argument, NULL, 'c'},
                                             {"batch", required_argument, NULL, 'b'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {"count", required_argument, NULL, 'n'},
                                             {"seconds", required_argument, NULL, 's'},
                                             {"duplicates", required_argument, NULL, 'd'},
                                             {"accounts", required_argument, NULL, 'a'},
                                             {"seed", required_argument, NULL, 'S'},
                                             {"retry-timeout", required_argument, NULL, 'T'},
                                             {"write-file", required_argument, NULL, 'w'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *opt = (s_options_t){
        .connections = 4, .batch = 100, .account_count = 3, .seed = 1, .retry_timeout_s = 120};
    const char *regions = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "u:R:c:b:r:n:s:d:a:S:w:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            if (opt->target_count == LOADGEN_MAX_TARGETS ||
                s_parse_url(optarg, &opt->targets[opt->target_count]) != 0) {
                fprintf(stderr, "cairn-loadgen: bad or too many --url: %s\n", optarg);
                return -1;
            }
            opt->target_count++;
            break;
        case 'R':
            regions = optarg;
            break;
        case 'c':
            opt->connections = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            opt->batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            opt->rate = strtod(optarg, NULL);
            break;
        case 'n':
            opt->count = strtoull(optarg, NULL, 10);
            break;
        case 's':
            opt->seconds = strtod(optarg, NULL);
            break;
        case 'd':
            opt->duplicates = strtod(optarg, NULL);
            break;
        case 'a':
            opt->account_count = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'S':
            opt->seed = strtoull(optarg, NULL, 10);
            break;
        case 'T':
            opt->retry_timeout_s = strtod(optarg, NULL);
            break;
        case 'w':
            opt->write_file = optarg;
            break;
        case 'q':
            opt->is_quiet = true;
            break;
        case 'h':
            s_usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "cairn-loadgen: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (opt->write_file && opt->target_count == 0) {
        s_parse_url("http://127.0.0.1:1", &opt->targets[0]);
        opt->target_count = 1;
    }
    if (opt->target_count == 0) {
        fprintf(stderr, "cairn-loadgen: give --url (or --write-file)\n");
        return -1;
    }
    if (regions) {
        size_t i = 0;
        for (const char *p = regions; *p && i < opt->target_count; i++) {
            size_t n = strcspn(p, ",");
            if (n == 0 || n >= sizeof opt->targets[i].region)
                return -1;
            memcpy(opt->targets[i].region, p, n);
            opt->targets[i].region[n] = '\0';
            p += n + (p[n] == ',');
        }
    }
    if (opt->connections < 1 || opt->connections > LOADGEN_MAX_CONNECTIONS || opt->batch < 1 ||
        opt->batch > LOADGEN_MAX_BATCH || opt->rate < 0 || opt->seconds < 0 ||
        opt->duplicates < 0 || opt->duplicates >= 1 || opt->account_count < 1 ||
        opt->account_count > 9 || opt->retry_timeout_s <= 0) {
        fprintf(stderr, "cairn-loadgen: an option is out of range (see --help)\n");
        return -1;
    }
    if (opt->count == 0 && opt->seconds == 0)
        opt->count = 100000; /* every run is bounded */
    return 0;
}

int main(int argc, char **argv)
{
    cairn_log_set_ident("cairn-loadgen");
    s_options_t opt;
    if (s_parse_options(argc, argv, &opt) != 0) {
        s_usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < S_CALL_COUNT; i++)
        s_call_weight_total += s_calls[i].weight;

    s_counts_t total = {0};
    s_hist_t *hist = cairn_calloc(1, sizeof *hist);
    double seconds = 0;
    int rc = 0;
    if (opt.write_file) {
        rc = s_write_file(&opt, &total, &seconds) == 0 ? 0 : 1;
    } else {
        s_shared_t shared = {.options = &opt};
        shared.start_us = s_now_us();
        shared.start_wall_s = cairn_time_now_ms() / 1000;
        s_worker_t *workers = cairn_calloc(opt.connections, sizeof *workers);
        for (unsigned i = 0; i < opt.connections; i++) {
            s_worker_t *w = &workers[i];
            w->shared = &shared;
            w->index = i;
            w->target = &opt.targets[i % opt.target_count];
            w->fd = -1;
            w->pending = cairn_calloc(opt.batch, sizeof *w->pending);
            w->body_cap = (size_t)opt.batch * (LOADGEN_RECORD_MAX_BYTES + 1) + 2;
            w->body = cairn_malloc(w->body_cap);
            s_rng_seed(w->rng, opt.seed * 7919 + i);
        }
        unsigned started = 0;
        for (; started < opt.connections; started++)
            if (pthread_create(&workers[started].thread, NULL, s_worker_run, &workers[started]) !=
                0) {
                cairn_log_error("loadgen: cannot start thread %u", started);
                atomic_store(&shared.is_stopping, true);
                rc = 1;
                break;
            }
        for (unsigned i = 0; i < started; i++)
            pthread_join(workers[i].thread, NULL);
        seconds = (double)(s_now_us() - shared.start_us) / 1e6;
        for (unsigned i = 0; i < opt.connections; i++) {
            s_worker_t *w = &workers[i];
            s_hist_merge(hist, &w->hist);
            total.events_sent += w->counts.events_sent;
            total.events_accepted += w->counts.events_accepted;
            total.events_unique += w->counts.events_unique;
            total.duplicates_sent += w->counts.duplicates_sent;
            total.requests += w->counts.requests;
            total.errors += w->counts.errors;
            total.retries_503 += w->counts.retries_503;
            total.reconnects += w->counts.reconnects;
            total.bytes_sent += w->counts.bytes_sent;
            free(w->pending);
            free(w->body);
        }
        free(workers);
    }
    double rate = seconds > 0 ? (double)total.events_accepted / seconds : 0;
    double avg = total.events_sent ? (double)total.bytes_sent / (double)(total.events_sent) : 0;
    double p50 = s_hist_quantile_ms(hist, 0.50), p99 = s_hist_quantile_ms(hist, 0.99);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double max_ms = (double)hist->max_us / 1000.0;
    if (!opt.is_quiet) {
        printf("cairn-loadgen: %s\n", opt.write_file ? opt.write_file : "HTTP");
        printf("  events sent      %llu (%llu exact duplicates, %llu unique accepted)\n",
               (unsigned long long)total.events_sent, (unsigned long long)total.duplicates_sent,
               (unsigned long long)total.events_unique);
        printf("  events accepted  %llu in %llu requests of up to %u, %llu errors, "
               "%llu 503 retries, %llu reconnects\n",
               (unsigned long long)total.events_accepted, (unsigned long long)total.requests,
               opt.batch, (unsigned long long)total.errors, (unsigned long long)total.retries_503,
               (unsigned long long)total.reconnects);
        printf("  rate             %.0f events/s over %.2f s (%u connections)\n", rate, seconds,
               opt.connections);
        printf("  record size      %.0f bytes on average\n", avg);
        printf("  own CPU          %.2f s\n", cpu_s);
        if (!opt.write_file)
            printf("  latency          p50 %.2f ms, p99 %.2f ms, max %.2f ms (send -> 200)\n", p50,
                   p99, max_ms);
    }
    printf("{\"events_sent\":%llu,\"events_accepted\":%llu,\"events_unique\":%llu,"
           "\"duplicates_sent\":%llu,\"requests\":%llu,\"errors\":%llu,\"retries_503\":%llu,"
           "\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"seconds\":%.3f,"
           "\"avg_record_bytes\":%.1f,\"cpu_s\":%.3f}\n",
           (unsigned long long)total.events_sent, (unsigned long long)total.events_accepted,
           (unsigned long long)total.events_unique, (unsigned long long)total.duplicates_sent,
           (unsigned long long)total.requests, (unsigned long long)total.errors,
           (unsigned long long)total.retries_503, rate, p50, p99, max_ms, seconds, avg, cpu_s);
    free(hist);
    if (total.errors > 0)
        rc = 1;
    return rc;
}
