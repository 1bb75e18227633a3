/* cairn_signal.c: SIGHUP → reload flag (see cairn_signal.h). */
#include "cairn_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t s_reload_requested;

static void s_on_hup(int signo)
{
    (void)signo;
    s_reload_requested = 1;
}

void cairn_signal_catch_reload(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = s_on_hup;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &action, NULL);
}

bool cairn_signal_take_reload(void)
{
    if (!s_reload_requested)
        return false;
    s_reload_requested = 0;
    return true;
}
