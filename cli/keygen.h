/* keygen.h: `cairn keygen` — makes a CURVE keypair for an agent or the
 * aggregator: NAME.key (public, shareable) and NAME.key_secret (mode 0600). */
#ifndef CAIRN_KEYGEN_H
#define CAIRN_KEYGEN_H

/* Runs the subcommand with its own arguments (argv[0] is "keygen").
 * Returns the process exit code. */
int keygen_main(int argc, char **argv);

#endif
