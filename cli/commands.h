/* cli/commands.h: the zen subcommands. Each returns an exit code (0, 1 or 2)
 * after printing nothing on error: main prints the one-line message. */
#ifndef ZEN_COMMANDS_H
#define ZEN_COMMANDS_H
#include "cli.h"

int zen_cmd_init(int argc, char **argv);
int zen_cmd_grad(int argc, char **argv);
int zen_cmd_train(int argc, char **argv);
int zen_cmd_eval(int argc, char **argv);
int zen_cmd_generate(int argc, char **argv);
int zen_cmd_export(int argc, char **argv);
int zen_cmd_info(int argc, char **argv);
int zen_cmd_data(int argc, char **argv);

/* each with its option table (cli.h), in the order zen --help lists them */
extern const zen_command zen_command_init, zen_command_data, zen_command_train, zen_command_grad, zen_command_eval,
    zen_command_generate, zen_command_export, zen_command_info;

#endif
