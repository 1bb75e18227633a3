/* cairn: the operators' and auditors' command.
 *
 * DESIGN: a dispatcher, as git is: `cairn query ...` runs the program
 * cairn-query beside it (or in ../libexec/cairn when installed), replacing
 * this process. Each subcommand is its own small program linked only to
 * what it uses, so `cairn query` does not pay for loading libcurl and
 * libzmq (and their dozens of dependencies) that only `status` and `keygen`
 * need: starting a program that links everything took 8 ms, more than the
 * query itself on a store of ten million events. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const s_commands[] = {"keygen", "query", "status", NULL};

static void s_usage(FILE *out)
{
    fprintf(out, "Usage: cairn COMMAND [OPTIONS]\n"
                 "\n"
                 "Commands:\n"
                 "  keygen PATH    write a CURVE keypair for an agent (--agent-id) or the aggregator\n"
                 "  query          find events in the store (who did what, when)\n"
                 "  status         show each region's agent and the delivery progress\n"
                 "  version        print the version\n"
                 "\n"
                 "Run 'cairn COMMAND --help' for a command's options.\n");
}

/* Replaces this process with cairn-<cmd>. Returns only on failure. */
static int s_exec(const char *cmd, char **argv)
{
    char self[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "cairn: cannot find where cairn is: %s\n", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    const char *const places[] = {"%s/cairn-%s", "%s/../libexec/cairn/cairn-%s"};
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        snprintf(path, sizeof path, places[i], self, cmd);
        if (access(path, X_OK) == 0) {
            execv(path, argv);
            fprintf(stderr, "cairn: cannot run %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    fprintf(stderr, "cairn: the %s command is not installed (no cairn-%s beside %s)\n", cmd, cmd,
            self);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        s_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("cairn %s\n", CAIRN_VERSION);
        return 0;
    }
    for (size_t i = 0; s_commands[i]; i++)
        if (!strcmp(cmd, s_commands[i]))
            return s_exec(cmd, argv + 1); /* argv[1] is the command: its argv[0] */
    fprintf(stderr, "cairn: unknown command \"%s\"\n\n", cmd);
    s_usage(stderr);
    return 2;
}
