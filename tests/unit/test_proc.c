/*
 * test_proc.c - the child-process runner (common/clients/proc.c): argv arrives verbatim (no shell),
 * the child's environment is exactly the array given and the parent's is left alone,
 * stdin is /dev/null and no descriptor of ours leaks, output is capped (tail, or head with
 * a stop), a timeout or keep_going stops the whole process group (SIGTERM, then SIGKILL
 * for a group that ignores it), signals a worker ignores or blocks are reset for the
 * child, exit codes and signals are reported, a descendant holding the pipes does not
 * hold the caller, and freeing an unwaited run kills and reaps it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "util.h"

extern char **environ;

static dq_proc_status run(const dq_proc_opts *o, dq_proc_result *res)
{
    char err[256];

    return dq_proc_run(o, res, err, sizeof err);
}

/* 1 once pid no longer runs (gone, or a zombie waiting for its new parent), within ms. */
static int gone_within(pid_t pid, int64_t ms)
{
    int64_t until = dq_mono_ms() + ms;
    char path[64], stat[256];

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    do {
        FILE *f = fopen(path, "r");
        char *paren;

        if (f == NULL)
            return 1;
        stat[0] = '\0';
        if (fgets(stat, sizeof stat, f) == NULL)
            stat[0] = '\0';
        fclose(f);
        paren = strrchr(stat, ')');
        if (paren == NULL || (paren[1] == ' ' && paren[2] == 'Z'))
            return 1;
        dq_sleep_ms(20);
    } while (dq_mono_ms() < until);
    return 0;
}

static void test_argv_verbatim(void **state)
{
    /* Shell syntax, quotes, an empty argument and spaces: each must arrive as it is. */
    char *argv[] = {"printf", "[%s]", "a b", "$HOME", "'q'", "", ";rm -rf /", "*", "`id`", NULL};
    char *env[] = {"HOME=/should-not-expand", NULL};
    dq_proc_opts o = {.argv = argv, .envp = env};
    dq_proc_result res;

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_string_equal(res.out, "[a b][$HOME]['q'][][;rm -rf /][*][`id`]");
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.term_signal, 0);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    assert_string_equal(res.err, "");
    dq_proc_result_free(&res);
}

static void test_env_exactly_given(void **state)
{
    /* The parent has PATH, HOME, ... : none of it may reach the child. */
    char *argv[] = {"env", NULL};
    char *env[] = {"A=1", "B=two words", "C=$HOME;x", NULL};
    char *none[] = {NULL};
    dq_proc_opts o = {.argv = argv, .envp = env};
    dq_proc_result res;

    assert_non_null(getenv("PATH"));
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_string_equal(res.out, "A=1\nB=two words\nC=$HOME;x\n");
    dq_proc_result_free(&res);

    o.envp = none;
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_string_equal(res.out, "");
    dq_proc_result_free(&res);
}

static size_t environ_count(void)
{
    size_t n = 0;

    while (environ[n] != NULL)
        n++;
    return n;
}

static void test_env_builder_leaves_parent_alone(void **state)
{
    char *argv[] = {"sh", "-c",
                    "printf '%s|%s|%s|' \"$DQ_PROC_KEEP\" \"$DQ_PROC_NEW\" \"${DQ_PROC_DROP-unset}\"; "
                    "env | grep -c '^DQ_PROC_KEEP='",
                    NULL};
    const dq_proc_var set[] = {
        {"DQ_PROC_KEEP", "first"},
        {"DQ_PROC_NEW", "new value; $(id)"},
        {"DQ_PROC_DROP", NULL},
        {"DQ_PROC_KEEP", "child"}, /* the later one wins, and the name appears once */
    };
    char **env;
    size_t before;
    dq_proc_result res;

    setenv("DQ_PROC_KEEP", "parent", 1);
    setenv("DQ_PROC_DROP", "drop-me", 1);
    unsetenv("DQ_PROC_NEW");
    before = environ_count();
    env = dq_proc_env(set, sizeof set / sizeof set[0]);
    assert_non_null(env);
    dq_proc_opts o = {.argv = argv, .envp = env};
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_string_equal(res.out, "child|new value; $(id)|unset|1\n");
    dq_proc_result_free(&res);
    dq_proc_env_free(env);

    /* Nothing was written into the parent's environment, before or after the spawn. */
    assert_string_equal(getenv("DQ_PROC_KEEP"), "parent");
    assert_string_equal(getenv("DQ_PROC_DROP"), "drop-me");
    assert_null(getenv("DQ_PROC_NEW"));
    assert_int_equal(environ_count(), before);
    unsetenv("DQ_PROC_KEEP");
    unsetenv("DQ_PROC_DROP");
}

/* One thread's runs: each child must see the value given for it, whatever the other
 * threads give theirs at the same time (a runner that went through setenv would mix them). */
static void *env_runs(void *arg)
{
    long t = (long)arg, bad = 0;
    char *argv[] = {"sh", "-c", "printf %s \"$DQ_PROC_COLOR\"", NULL};

    for (int j = 0; j < 25; j++) {
        char want[32];
        dq_proc_var v = {"DQ_PROC_COLOR", want};
        char **env;
        dq_proc_result res = {0};

        snprintf(want, sizeof want, "t%ld-%d", t, j);
        env = dq_proc_env(&v, 1);
        dq_proc_opts o = {.argv = argv, .envp = env};
        if (env == NULL || run(&o, &res) != DQ_PROC_OK || strcmp(res.out, want) != 0)
            bad++;
        dq_proc_result_free(&res);
        dq_proc_env_free(env);
    }
    return (void *)bad;
}

static void test_env_per_run_under_threads(void **state)
{
    pthread_t th[4];
    void *bad;

    for (long t = 0; t < 4; t++)
        assert_int_equal(pthread_create(&th[t], NULL, env_runs, (void *)t), 0);
    for (int t = 0; t < 4; t++) {
        assert_int_equal(pthread_join(th[t], &bad), 0);
        assert_int_equal((long)bad, 0);
    }
    assert_null(getenv("DQ_PROC_COLOR"));
}

static void test_stdin_cwd_and_descriptors(void **state)
{
    /* Our stdin is a pipe and fd 57 is open without close-on-exec: the child must see
     * /dev/null and no fd 57. */
    char *argv[] = {"sh", "-c",
                    "readlink /proc/$$/fd/0; [ -e /proc/$$/fd/57 ] && echo leaked || echo closed; pwd", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    dq_proc_opts o = {.argv = argv, .envp = env, .cwd = "/"};
    dq_proc_result res;
    int p[2], saved0 = dup(0);

    assert_int_equal(fcntl(57, F_GETFD), -1); /* not ours already */
    assert_int_equal(pipe(p), 0);
    assert_int_equal(dup2(p[0], 0), 0);
    assert_int_equal(dup2(p[1], 57), 57);
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    dup2(saved0, 0);
    close(saved0);
    close(57);
    close(p[0]);
    close(p[1]);
    assert_string_equal(res.out, "/dev/null\nclosed\n/\n");
    dq_proc_result_free(&res);
}

static void test_output_tail(void **state)
{
    char *argv[] = {"sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done", NULL};
    char *env[] = {NULL};
    dq_proc_opts o = {.argv = argv, .envp = env, .out_max = 100};
    dq_proc_result res;
    size_t total = 0;
    char line[32], *text;

    for (int i = 0; i < 3000; i++)
        total += (size_t)snprintf(line, sizeof line, "line-%d\n", i);
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.out_len, 100);
    assert_int_equal(strlen(res.out), 100);
    assert_int_equal(res.out_total, total);
    assert_string_equal(res.out + 90, "line-2999\n");
    text = dq_proc_text(res.out, res.out_len, res.out_total);
    assert_non_null(text);
    assert_int_equal(strlen(text), 104);
    assert_int_equal(strncmp(text, "...\n", 4), 0);
    free(text);
    dq_proc_result_free(&res);
}

static void test_output_head_stops(void **state)
{
    /* `yes` never ends: the head mode must stop it at the cap, long before the limit. */
    char *argv[] = {"yes", NULL};
    char *env[] = {NULL};
    dq_proc_opts o = {.argv = argv, .envp = env, .out_max = 1000, .out_keep = DQ_PROC_KEEP_HEAD,
                      .timeout_ms = 20000};
    dq_proc_result res;
    int64_t t0 = dq_mono_ms();

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_true(dq_mono_ms() - t0 < 5000);
    assert_int_equal(res.stopped, DQ_PROC_STOP_OUTPUT);
    assert_int_equal(res.term_signal, SIGTERM);
    assert_int_equal(res.out_len, 1000);
    assert_true(res.out_total > 1000);
    for (size_t i = 0; i < 1000; i += 2)
        assert_memory_equal(res.out + i, "y\n", 2);
    dq_proc_result_free(&res);

    /* exactly out_max bytes is not too many */
    char *exact[] = {"printf", "0123456789", NULL};
    o.argv = exact;
    o.out_max = 10;
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    assert_string_equal(res.out, "0123456789");
    dq_proc_result_free(&res);
}

static void test_stderr_merged_or_apart(void **state)
{
    char *argv[] = {"sh", "-c", "echo out; echo err >&2; echo out2", NULL};
    char *env[] = {NULL};
    dq_proc_opts o = {.argv = argv, .envp = env};
    dq_proc_result res;

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_string_equal(res.out, "out\nerr\nout2\n");
    assert_string_equal(res.err, "");
    dq_proc_result_free(&res);

    o.stderr_apart = 1;
    o.err_max = 3;
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_string_equal(res.out, "out\nout2\n");
    assert_string_equal(res.err, "rr\n"); /* the tail */
    assert_int_equal(res.err_total, 4);
    dq_proc_result_free(&res);
}

static void test_timeout_kills_group(void **state)
{
    /* The child ignores SIGTERM and so does its grandchild (an ignored signal survives
     * fork and exec): only SIGKILL to the whole group ends both. */
    char *argv[] = {"sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait; echo never", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    dq_proc_opts o = {.argv = argv, .envp = env, .timeout_ms = 300, .kill_grace_ms = 300};
    dq_proc_result res;
    int64_t t0 = dq_mono_ms(), took;
    long grandchild;

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    took = dq_mono_ms() - t0;
    assert_true(took >= 600);
    assert_true(took < 3000);
    assert_int_equal(res.stopped, DQ_PROC_STOP_TIMEOUT);
    assert_int_equal(res.exit_code, -1);
    assert_int_equal(res.term_signal, SIGKILL);
    grandchild = strtol(res.out, NULL, 10);
    assert_true(grandchild > 1);
    assert_true(gone_within((pid_t)grandchild, 2000));
    dq_proc_result_free(&res);

    /* A child that does not ignore SIGTERM ends with it, before any SIGKILL. */
    char *sleeper[] = {"sleep", "30", NULL};
    o.argv = sleeper;
    o.timeout_ms = 200;
    o.kill_grace_ms = 5000;
    t0 = dq_mono_ms();
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_true(dq_mono_ms() - t0 < 2000);
    assert_int_equal(res.stopped, DQ_PROC_STOP_TIMEOUT);
    assert_int_equal(res.term_signal, SIGTERM);
    dq_proc_result_free(&res);
}

static void test_signals_reset_for_child(void **state)
{
    /* A worker may block SIGTERM or ignore it (and SIGPIPE): the child must not inherit
     * either, or a timeout could only end it with SIGKILL after the grace. */
    char *argv[] = {"sleep", "30", NULL};
    char *env[] = {NULL};
    dq_proc_opts o = {.argv = argv, .envp = env, .timeout_ms = 200, .kill_grace_ms = 5000};
    dq_proc_result res;
    sigset_t block, old;
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_term;
    int64_t t0;

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    assert_int_equal(sigprocmask(SIG_BLOCK, &block, &old), 0);
    assert_int_equal(sigaction(SIGTERM, &ign, &old_term), 0);
    t0 = dq_mono_ms();
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    sigaction(SIGTERM, &old_term, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    assert_true(dq_mono_ms() - t0 < 2000);
    assert_int_equal(res.term_signal, SIGTERM);
    dq_proc_result_free(&res);
}

static void test_exit_codes_and_signals(void **state)
{
    char *exit3[] = {"sh", "-c", "exit 3", NULL};
    char *usr1[] = {"sh", "-c", "kill -USR1 $$", NULL};
    char *ok[] = {"true", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    dq_proc_opts o = {.argv = exit3, .envp = env};
    dq_proc_result res;

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_int_equal(res.exit_code, 3);
    assert_int_equal(res.term_signal, 0);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    dq_proc_result_free(&res);

    o.argv = usr1;
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_int_equal(res.exit_code, -1);
    assert_int_equal(res.term_signal, SIGUSR1);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    dq_proc_result_free(&res);

    o.argv = ok;
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.term_signal, 0);
    dq_proc_result_free(&res);
}

typedef struct asker {
    int calls;
    int stop_at; /* 0: never */
} asker;

static int ask(void *ctx)
{
    asker *a = ctx;

    a->calls++;
    return a->stop_at == 0 || a->calls < a->stop_at;
}

static void test_keep_going(void **state)
{
    char *sleeper[] = {"sleep", "30", NULL};
    char *short_run[] = {"sh", "-c", "sleep 0.4; exit 5", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    asker a = {.stop_at = 3};
    dq_proc_opts o = {.argv = sleeper, .envp = env, .keep_going = ask, .ctx = &a};
    dq_proc_result res;
    int64_t t0 = dq_mono_ms();

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_true(dq_mono_ms() - t0 < 1500);
    assert_int_equal(a.calls, 3);
    assert_int_equal(res.stopped, DQ_PROC_STOP_REQUESTED);
    assert_int_equal(res.term_signal, SIGTERM);
    dq_proc_result_free(&res);

    /* asked while it runs, and a yes lets it finish */
    a = (asker){0};
    o.argv = short_run;
    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_true(a.calls >= 3);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    assert_int_equal(res.exit_code, 5);
    dq_proc_result_free(&res);
}

static void test_start_failures(void **state)
{
    char *missing[] = {"deployq-no-such-program", "up", NULL};
    char *ok[] = {"true", NULL};
    char *env[] = {NULL};
    dq_proc_opts o = {.argv = missing, .envp = env};
    dq_proc_result res;
    char err[256];

    assert_int_equal(dq_proc_run(&o, &res, err, sizeof err), DQ_PROC_ESPAWN);
    assert_string_equal(err, "cannot start deployq-no-such-program: No such file or directory");
    assert_null(res.out);

    o.argv = ok;
    o.cwd = "/nonexistent/dir";
    assert_int_equal(dq_proc_run(&o, &res, err, sizeof err), DQ_PROC_ESPAWN);
    assert_string_equal(err, "cannot start true: No such file or directory");
}

static void test_descendant_holding_pipe(void **state)
{
    /* The child exits at once; its background grandchild keeps stdout open for 30 s. */
    char *argv[] = {"sh", "-c", "sleep 30 & echo $!", NULL};
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    dq_proc_opts o = {.argv = argv, .envp = env, .timeout_ms = 20000};
    dq_proc_result res;
    int64_t t0 = dq_mono_ms();
    long grandchild;

    assert_int_equal(run(&o, &res), DQ_PROC_OK);
    assert_true(dq_mono_ms() - t0 < DQ_PROC_DRAIN_MS + 1500);
    assert_int_equal(res.stopped, DQ_PROC_STOP_NONE);
    assert_int_equal(res.exit_code, 0);
    grandchild = strtol(res.out, NULL, 10);
    assert_true(grandchild > 1);
    kill((pid_t)grandchild, SIGKILL);
    dq_proc_result_free(&res);
}

static void test_free_kills_unwaited(void **state)
{
    char *argv[] = {"sleep", "30", NULL};
    char *env[] = {NULL};
    dq_proc_opts o = {.argv = argv, .envp = env};
    dq_proc *p = NULL;
    char err[256];
    pid_t pid;
    int64_t t0;

    assert_int_equal(dq_proc_start(&o, &p, err, sizeof err), DQ_PROC_OK);
    pid = dq_proc_pid(p);
    assert_true(pid > 0);
    assert_int_equal(getpgid(pid), pid); /* its own process group */
    t0 = dq_mono_ms();
    dq_proc_free(p);
    assert_true(dq_mono_ms() - t0 < 1000);
    /* killed and reaped: no zombie left to wait for */
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    dq_proc_free(NULL);
}

static void test_text(void **state)
{
    const char raw[] = "a\0b token=sekret-proc-123\n";
    char *t;

    dq_log_redact("sekret-proc-123");
    t = dq_proc_text(raw, sizeof raw - 1, sizeof raw - 1);
    assert_string_equal(t, "a b token=***\n");
    free(t);
    t = dq_proc_text(raw + 2, 3, 40);
    assert_string_equal(t, "...\nb t");
    free(t);
    dq_log_redact_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argv_verbatim),
        cmocka_unit_test(test_env_exactly_given),
        cmocka_unit_test(test_env_builder_leaves_parent_alone),
        cmocka_unit_test(test_env_per_run_under_threads),
        cmocka_unit_test(test_stdin_cwd_and_descriptors),
        cmocka_unit_test(test_output_tail),
        cmocka_unit_test(test_output_head_stops),
        cmocka_unit_test(test_stderr_merged_or_apart),
        cmocka_unit_test(test_timeout_kills_group),
        cmocka_unit_test(test_signals_reset_for_child),
        cmocka_unit_test(test_exit_codes_and_signals),
        cmocka_unit_test(test_keep_going),
        cmocka_unit_test(test_start_failures),
        cmocka_unit_test(test_descendant_holding_pipe),
        cmocka_unit_test(test_free_kills_unwaited),
        cmocka_unit_test(test_text),
    };

    dq_log_init("test_proc", DQ_LOG_OFF, 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
