/* train/run_lock.c: flock(2) on OUT/zen.lock (see run_lock.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "../util/error.h"
#include "../util/file.h"
#include "run_lock.h"

int zen_run_lock(const char *out_dir, int *fd) {
    *fd = -1;
    char *path = zen_path_join(out_dir, "zen.lock");
    if (!path) return ZEN_ERR_INTERNAL;
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) {
        int rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot create the run lock: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char holder[32] = "";
        ssize_t n = pread(f, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(f);
        free(path);
        if (err == EWOULDBLOCK)
            return zen_fail(ZEN_ERR_INPUT, "%s is in use by another zen train (pid %s); wait for it to end or choose "
                            "another --out", out_dir, holder[0] ? holder : "?");
        return zen_fail(ZEN_ERR_INTERNAL, "%s: cannot lock: %s", out_dir, strerror(err));
    }
    /* the holder's pid, for the message a second run prints */
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message loses it */
    }
    free(path);
    *fd = f;
    return 0;
}

void zen_run_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing the descriptor releases the flock */
}
