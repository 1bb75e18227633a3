/* cairn: the operators' and auditors' command. Dispatches to a subcommand. */
#include "keygen.h"
#include "query.h"
#include "status.h"

#include <stdio.h>
#include <string.h>

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
    if (!strcmp(cmd, "keygen"))
        return keygen_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "query"))
        return query_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "status"))
        return status_main(argc - 1, argv + 1);
    fprintf(stderr, "cairn: unknown command \"%s\"\n\n", cmd);
    s_usage(stderr);
    return 2;
}
