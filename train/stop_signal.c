/* train/stop_signal.c: a flag set by SIGINT/SIGTERM (see stop_signal.h). */
#include <signal.h>
#include <string.h>

#include "stop_signal.h"

static volatile sig_atomic_t pending;
static struct sigaction old_int, old_term;

static void on_signal(int sig) {
    if (pending) { /* the second signal: default action now */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    pending = sig;
}

void zen_stop_signal_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* reads and writes resume; the loop polls the flag */
    pending = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
}

void zen_stop_signal_restore(void) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}

int zen_stop_signal_pending(void) { return pending; }
