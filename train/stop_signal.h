/* train/stop_signal.h: SIGINT and SIGTERM during zen train. The first one
 * only sets a flag: the run finishes the step it is in, writes a checkpoint
 * and exits 130 (SIGINT) or 143 (SIGTERM) with a line saying how to resume.
 * A second one ends the process at once (checkpoints are atomic, so the
 * newest complete one survives). */
#ifndef ZEN_STOP_SIGNAL_H
#define ZEN_STOP_SIGNAL_H

void zen_stop_signal_install(void);
void zen_stop_signal_restore(void);
/* the signal received (SIGINT or SIGTERM), or 0 */
int zen_stop_signal_pending(void);

#endif
