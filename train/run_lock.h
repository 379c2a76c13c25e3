/* train/run_lock.h: one run per output directory. OUT/zen.lock is held with
 * flock(2) for the life of a zen train, so a second run into the same
 * directory (a fresh one or a --resume) is refused while the first lives;
 * the kernel drops the lock when its process ends, however it ends, so a
 * crash never leaves a stale lock. */
#ifndef ZEN_RUN_LOCK_H
#define ZEN_RUN_LOCK_H

/* Takes the lock of out_dir (which must exist); *fd gets the descriptor to
 * release with zen_run_unlock. A lock held elsewhere is a one-line error
 * naming the directory and the pid that holds it. */
int zen_run_lock(const char *out_dir, int *fd);
void zen_run_unlock(int fd);

#endif
