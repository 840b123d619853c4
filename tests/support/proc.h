/* Child processes and /proc readings shared by the test harness and the
 * bench (bench/meson.build links this file too). No Check here: callers
 * decide whether a failure fails a test or a benchmark scenario. */
#ifndef OBX_PROC_H
#define OBX_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Starts argv[0] (a path) with stdin from /dev/null, stderr appended to
 * log, stdout to out_fd (-1: the log too), in a process group of its own
 * and killed when the calling thread's process dies (PR_SET_PDEATHSIG), so
 * a failed test or a crashed bench leaves no child behind. -1 on fork failure. */
pid_t proc_spawn(char *const argv[], const char *log, int out_fd);
/* 1 when pid has exited, without reaping it (proc_reap still gets its status). */
int proc_exited(pid_t pid);
/* Sends sig (0: none) and reaps within timeout_ms, else SIGKILLs and reaps.
 * Returns the exit code, 128+signal, or -1 on timeout. */
int proc_reap(pid_t pid, int sig, double timeout_ms);
/* CPU seconds of pid (utime + stime) and its peak RSS in MB; NAN when unreadable. */
double proc_cpu_s(pid_t pid);
double proc_hwm_mb(pid_t pid);
/* The whole file, NUL-terminated, to free(); NULL when unreadable. */
char *proc_read_file(const char *path);
/* The last lines (at most `lines`) of the file at path into out; "(no
 * such file)" when unreadable. Returns out. */
const char *proc_tail(const char *path, int lines, char *out, size_t size);

#endif
