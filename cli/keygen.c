/* keygen.c: `cairn keygen` (see keygen.h). czmq's zcert writes the files;
 * the secret file is made 0600 before anything is written to it. */
#include "keygen.h"

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void s_usage(FILE *out)
{
    fprintf(out, "Usage: cairn keygen [--agent-id ID [--region REGION]] [--force] PATH\n"
                 "\n"
                 "Writes a CURVE keypair: PATH (public key, give it to the other side) and\n"
                 "PATH_secret (secret key, mode 0600, keep it on this host).\n"
                 "\n"
                 "For an agent, --agent-id binds the key to that agent id (and --region to\n"
                 "that region): copy PATH into the aggregator's allow_dir, and the aggregator\n"
                 "accepts from this key only messages of that agent.\n"
                 "  --agent-id ID     agent id bound to the key\n"
                 "  --region REGION   region bound to the key\n"
                 "  --force           overwrite existing files\n");
}

int keygen_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"force", no_argument, NULL, 'f'},
                                             {"agent-id", required_argument, NULL, 'a'},
                                             {"region", required_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int is_force = 0, opt;
    const char *agent_id = NULL, *region = NULL;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "fh", longopts, NULL)) != -1) {
        if (opt == 'f')
            is_force = 1;
        else if (opt == 'a')
            agent_id = optarg;
        else if (opt == 'r')
            region = optarg;
        else if (opt == 'h') {
            s_usage(stdout);
            return 0;
        } else {
            s_usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc || (region && !agent_id)) {
        s_usage(stderr);
        return 2;
    }
    const char *path = argv[optind];
    char secret[4096];
    snprintf(secret, sizeof secret, "%s_secret", path);
    struct stat st;
    if (!is_force && (stat(path, &st) == 0 || stat(secret, &st) == 0)) {
        fprintf(stderr, "cairn keygen: %s or %s exists; use --force to replace it\n", path,
                secret);
        return 1;
    }
    if (!zsys_has_curve()) {
        fprintf(stderr, "cairn keygen: this libzmq has no CURVE support\n");
        return 1;
    }
    zcert_t *cert = zcert_new();
    int rc = cert ? 0 : -1;
    if (cert && agent_id)
        zcert_set_meta(cert, "agent_id", "%s", agent_id);
    if (cert && region)
        zcert_set_meta(cert, "region", "%s", region);
    /* Create the secret file 0600 first so the key is never world-readable. */
    FILE *f = rc == 0 ? fopen(secret, "w") : NULL;
    if (f) {
        fclose(f);
        rc = chmod(secret, 0600);
    } else
        rc = -1;
    if (rc == 0)
        rc = zcert_save(cert, path);
    if (rc == 0)
        rc = chmod(secret, 0600);
    if (rc != 0)
        fprintf(stderr, "cairn keygen: cannot write %s: %s\n", path, strerror(errno));
    else
        printf("public key: %s\nsecret key: %s (mode 0600)\n%s\n", path, secret,
               zcert_public_txt(cert));
    zcert_destroy(&cert);
    return rc == 0 ? 0 : 1;
}
