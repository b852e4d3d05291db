/*
 * proc.h - the one child-process runner: every program deployq starts (the validator's
 * drift_check, the blue-green router command, the command provider's deploy CLI) is started,
 * watched and reaped here, so each guarantee below is written once.
 *
 * What every run gets:
 *  - posix_spawnp with argv exactly as given: no shell, no splitting, no expansion; argv[0]
 *    is looked up in PATH.
 *  - the environment the caller built before the spawn (dq_proc_env) and nothing else. The
 *    process environment is only read, never written: setenv between fork and exec in a
 *    threaded process is undefined, and setenv in the parent races every getenv.
 *  - stdin from /dev/null. stdout and stderr go into pipes that the runner reads, never to
 *    our own descriptors: our stderr is the log stream, and what a child prints reaches a
 *    log or an event only through the caller and dq_proc_text (redacted).
 *  - no other descriptor of ours (all above 2 are closed in the child).
 *  - a process group of its own, an empty signal mask and default dispositions for the
 *    signals a worker may block or ignore (SIGPIPE, SIGTERM, SIGINT, ...).
 *  - a time limit and a stop on request (keep_going), both the same way: SIGTERM to the
 *    whole group, SIGKILL to the group kill_grace_ms later, so no grandchild outlives it.
 *  - bounded output: out_max bytes of stdout (stderr too, unless apart), the tail or the
 *    head; err_max bytes of stderr kept apart.
 *  - its exit code or the signal that ended it, and whether (and why) we stopped it.
 * After the child exits, its pipes are read until they close, for at most DQ_PROC_DRAIN_MS:
 * a descendant that keeps them open does not hold the caller (it is not killed either).
 *
 * A dq_proc is used by one thread at a time; dq_proc_wait may run in another thread than
 * dq_proc_start (the command provider waits in a thread per run). No global state.
 */
#ifndef DQ_PROC_H
#define DQ_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DQ_PROC_KILL_GRACE_MS 2000 /* SIGTERM to SIGKILL, unless opts say otherwise */
#define DQ_PROC_DRAIN_MS 500       /* reading on after the child exited */
#define DQ_PROC_OUT_DEFAULT 8192
#define DQ_PROC_ERR_DEFAULT 4096
#define DQ_PROC_POLL_MS 50         /* how often keep_going is asked */

typedef enum {
    DQ_PROC_OK = 0,
    DQ_PROC_ESETUP = -1, /* our side failed (pipe, memory, descriptors): nothing ran */
    DQ_PROC_ESPAWN = -2, /* posix_spawnp refused (no such program, not executable, bad
                          * cwd): nothing ran; err says "cannot start <argv0>: <reason>" */
    DQ_PROC_EWAIT = -3,  /* the child ran but could not be reaped (SIGCHLD ignored, or
                          * someone else waited for it): its status is unknown */
} dq_proc_status;

typedef enum {
    DQ_PROC_KEEP_TAIL = 0, /* the last out_max bytes; the run goes on */
    DQ_PROC_KEEP_HEAD = 1, /* the first out_max bytes; one byte more stops the run
                            * (DQ_PROC_STOP_OUTPUT): for output that is parsed, not shown */
} dq_proc_keep;

typedef enum {
    DQ_PROC_STOP_NONE = 0,   /* it ended on its own */
    DQ_PROC_STOP_TIMEOUT,    /* timeout_ms passed */
    DQ_PROC_STOP_REQUESTED,  /* keep_going returned 0 */
    DQ_PROC_STOP_OUTPUT,     /* more than out_max bytes with DQ_PROC_KEEP_HEAD */
} dq_proc_stop;

typedef struct dq_proc_opts {
    char *const *argv;     /* required: NULL-terminated, argv[0] not empty; copied by the spawn */
    char *const *envp;     /* the child's whole environment, NULL-terminated (NULL: empty) */
    const char *cwd;       /* NULL: ours */
    int64_t timeout_ms;    /* counted from the spawn; <= 0: no limit */
    int64_t kill_grace_ms; /* SIGTERM -> SIGKILL; 0: DQ_PROC_KILL_GRACE_MS; < 0: SIGKILL at once */
    size_t out_max;        /* 0: DQ_PROC_OUT_DEFAULT */
    dq_proc_keep out_keep;
    int stderr_apart;      /* 0: stderr goes into out with stdout, in write order; 1: into err */
    size_t err_max;        /* the tail of stderr kept when apart; 0: DQ_PROC_ERR_DEFAULT */
    /* Asked about every DQ_PROC_POLL_MS from the thread in dq_proc_wait while the child
     * runs; 0 stops the run. NULL: never asked. */
    int (*keep_going)(void *ctx);
    void *ctx;
} dq_proc_opts;

typedef struct dq_proc_result {
    int exit_code;         /* its exit status; -1 when a signal ended it (or EWAIT) */
    int term_signal;       /* the signal that ended it; 0 when it exited */
    dq_proc_stop stopped;  /* whether we stopped it, and why */
    char *out;             /* malloc'd, NUL-terminated after out_len bytes (which may hold
                            * NULs themselves); free with dq_proc_result_free */
    size_t out_len;
    size_t out_total;      /* bytes written in all: more than out_len when cut */
    char *err;             /* stderr when apart, else ""; as out */
    size_t err_len;
    size_t err_total;
} dq_proc_result;

typedef struct dq_proc dq_proc;

/* One variable for dq_proc_env: value NULL removes name from the environment. */
typedef struct dq_proc_var {
    const char *name;
    const char *value;
} dq_proc_var;

/* An environment for a child: the process environment with each of set[0..n) replacing
 * the variable of that name (appended after the inherited ones, in set's order), or
 * removing it when its value is NULL. Every string is copied; free with
 * dq_proc_env_free. NULL on allocation failure. Reads environ, never writes it (a thread
 * that calls setenv at the same time races with this read, as with any getenv). */
char **dq_proc_env(const dq_proc_var *set, size_t n);
void dq_proc_env_free(char **env);

/* Start o->argv. DQ_PROC_OK with *out a running child that the caller must end with
 * dq_proc_wait and then dq_proc_free; otherwise nothing runs, *out is NULL and err holds
 * one line. o is not kept (keep_going and ctx are, until dq_proc_free). */
dq_proc_status dq_proc_start(const dq_proc_opts *o, dq_proc **out, char *err, size_t errlen);

/* The child's pid (also its process group). */
pid_t dq_proc_pid(const dq_proc *p);

/* Read the child's output, stop it when its time is up, keep_going says so or its head
 * output overflows, and reap it. Blocks until it has ended and been reaped (a stopped
 * child takes at most kill_grace_ms + DQ_PROC_DRAIN_MS more). Fills *res (free with
 * dq_proc_result_free) and returns DQ_PROC_OK, or DQ_PROC_EWAIT with exit_code -1 and
 * the output read. Call once. */
dq_proc_status dq_proc_wait(dq_proc *p, dq_proc_result *res);

/* Free p. A child not yet reaped by dq_proc_wait is killed (SIGKILL to its group) and
 * reaped first: freeing never leaves a child running or a zombie. NULL is a no-op. */
void dq_proc_free(dq_proc *p);

/* dq_proc_start, dq_proc_wait and dq_proc_free in one call, for a caller that waits.
 * Returns what start or wait returned; *res is filled (and must be freed) unless start
 * failed, in which case it is zeroed. */
dq_proc_status dq_proc_run(const dq_proc_opts *o, dq_proc_result *res, char *err, size_t errlen);

/* Free what res holds and zero it. NULL is a no-op. */
void dq_proc_result_free(dq_proc_result *res);

/* A kept tail (buf, len bytes of total written) as text for an event or a log line:
 * "...\n" in front when the output was cut, NULs as spaces, each secret registered with
 * dq_log_redact as "***". malloc'd; NULL on allocation failure. (A secret cut in two by
 * the start of the tail is not recognised: its end shows.) */
char *dq_proc_text(const char *buf, size_t len, size_t total);

#endif
