#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

pid_t proc_spawn(char *const argv[], const char *log, int out_fd) {
    pid_t parent = getpid(), pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* Its own process group: a ^C on the terminal reaches only the parent,
     * which stops its children in order. */
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    /* The parent may have died before prctl: then nobody would kill us. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    if (fd < 0 || null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0 ||
        dup2(out_fd >= 0 ? out_fd : fd, STDOUT_FILENO) < 0)
        _exit(127);
    execv(argv[0], argv);
    dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int proc_exited(pid_t pid) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int proc_reap(pid_t pid, int sig, double timeout_ms) {
    double deadline = now_ms() + timeout_ms;
    int st;

    if (pid <= 0)
        return -1;
    if (sig)
        kill(pid, sig);
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 || now_ms() >= deadline)
            break;
        usleep(5000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* A /proc file (its size reads as 0, so no proc_read_file) into buf;
 * 0, or -1 when unreadable. */
static int read_proc(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return -1;
    n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

/* The value N of the line "key: N" of a status file; NAN when unreadable
 * or absent. */
static double status_value(const char *path, const char *key) {
    char buf[4096];
    size_t klen = strlen(key);

    if (read_proc(path, buf, sizeof buf) != 0)
        return NAN;
    for (const char *line = buf; *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            return strtod(line + klen + 1, NULL);
        if (!nl)
            break;
        line = nl + 1;
    }
    return NAN;
}

double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    unsigned long ut, st;
    const char *p;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_proc(path, buf, sizeof buf) != 0)
        return NAN;
    /* The command name may hold spaces: count fields from its closing
     * parenthesis. state is field 3, utime 14, stime 15 (whole process). */
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double proc_hwm_mb(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    return status_value(path, "VmHWM") / 1024.0; /* "VmHWM:   N kB" */
}

char *proc_read_file(const char *path) {
    FILE *f = fopen(path, "r");
    char *text = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    text = malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
        goto out;
    }
    if (text)
        text[n] = '\0';
out:
    fclose(f);
    return text;
}

const char *proc_tail(const char *path, int lines, char *out, size_t size) {
    char *text = proc_read_file(path);
    const char *p;
    size_t len;

    if (!text) {
        snprintf(out, size, "(no such file)");
        return out;
    }
    len = strlen(text);
    p = text + len;
    if (p > text && p[-1] == '\n')
        p--;
    while (p > text && lines > 0)
        if (*--p == '\n')
            lines--;
    if (*p == '\n')
        p++;
    /* Keep the end when the lines do not fit: the last line says most. */
    len = strlen(p);
    snprintf(out, size, "%s", len >= size ? p + len - (size - 1) : p);
    free(text);
    return out;
}
