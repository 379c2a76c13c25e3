/* train/commands.h: the zen subcommands. Each returns an exit code (0, 1 or 2)
 * after printing nothing on error: main prints the one-line message. */
#ifndef ZEN_COMMANDS_H
#define ZEN_COMMANDS_H

int zen_cmd_init(int argc, char **argv);
int zen_cmd_grad(int argc, char **argv);
int zen_cmd_train(int argc, char **argv);
int zen_cmd_eval(int argc, char **argv);
int zen_cmd_generate(int argc, char **argv);
int zen_cmd_export(int argc, char **argv);
int zen_cmd_info(int argc, char **argv);
int zen_cmd_data(int argc, char **argv);

#endif
