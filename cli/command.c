/* command.c: main() of one cairn subcommand program (cairn-query, ...).
 * CAIRN_COMMAND names the subcommand's entry point; `cairn` execs the
 * program with the subcommand's name as argv[0]. */
#include "keygen.h"
#include "query.h"
#include "status.h"

int main(int argc, char **argv)
{
    return CAIRN_COMMAND(argc, argv);
}
