/*
 * test_log.c - log.h: exact JSON and text line layout, level filtering, environment
 * overrides, redaction of registered secrets, one line per message, and whole lines
 * when several threads log at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "util.h"

/* stderr is swapped for a temporary file while a test logs, then read back. */
static FILE *capture_file;
static int saved_stderr = -1;

static void capture_begin(void)
{
    fflush(stderr);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

/* Returns what was logged since capture_begin (malloc'd). */
static char *capture_end(void)
{
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    long n = ftell(capture_file);
    assert_true(n >= 0);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(capture_file);
    assert_int_equal(fread(text, 1, (size_t)n, capture_file), (size_t)n);
    fclose(capture_file);
    return text;
}

static int reset(void **state)
{
    (void)state;
    unsetenv("DEPLOYQ_LOG_LEVEL");
    unsetenv("DEPLOYQ_LOG_FORMAT");
    dq_log_redact_clear();
    dq_log_init("deployq-validator", DQ_LOG_INFO, 1);
    return 0;
}

static void test_json_line_exact(void **state)
{
    (void)state;
    capture_begin();
    int64_t before = dq_now_ms();
    dq_log_write(DQ_LOG_INFO, "../workers/validator/file.c", 12, "hello %s \"q\" %d", "world",
                 7);
    char *out = capture_end();

    char expected[256];
    snprintf(expected, sizeof expected,
             "\",\"level\":\"info\",\"prog\":\"deployq-validator\",\"pid\":%ld,"
             "\"src\":\"file.c:12\",\"msg\":\"hello world \\\"q\\\" 7\"}\n",
             (long)getpid());
    assert_memory_equal(out, "{\"ts\":\"", 7);
    assert_string_equal(out + 7 + DQ_TIME_LEN, expected);

    char ts[DQ_TIME_LEN + 1];
    int64_t at;
    memcpy(ts, out + 7, DQ_TIME_LEN);
    ts[DQ_TIME_LEN] = '\0';
    assert_int_equal(dq_time_parse(ts, &at), 0);
    assert_true(at >= before - 1 && at <= dq_now_ms() + 1);
    free(out);
}

static void test_text_line_exact(void **state)
{
    (void)state;
    dq_log_init("deployq-validator", DQ_LOG_INFO, 0);
    capture_begin();
    dq_warn("disk at %d%%", 91);
    int line = __LINE__ - 1;
    char *out = capture_end();

    char expected[256];
    snprintf(expected, sizeof expected,
             " deployq-validator[%ld] warn: disk at 91%% (test_log.c:%d)\n", (long)getpid(), line);
    assert_int_equal(out[DQ_TIME_LEN - 1], 'Z');
    assert_int_equal(out[10], 'T');
    assert_string_equal(out + DQ_TIME_LEN, expected);
    free(out);
}

static void test_level_filter(void **state)
{
    (void)state;
    capture_begin();
    dq_debug("hidden");
    dq_info("shown");
    dq_log_init("deployq-validator", DQ_LOG_ERROR, 1);
    dq_warn("hidden too");
    dq_error("also shown");
    dq_log_init("deployq-validator", DQ_LOG_OFF, 1);
    dq_error("nothing at off");
    char *out = capture_end();

    assert_null(strstr(out, "hidden"));
    assert_null(strstr(out, "nothing"));
    assert_non_null(strstr(out, "\"msg\":\"shown\""));
    assert_non_null(strstr(out, "\"level\":\"error\""));
    assert_non_null(strstr(out, "\"msg\":\"also shown\""));
    free(out);
}

static void test_env_overrides(void **state)
{
    (void)state;
    setenv("DEPLOYQ_LOG_LEVEL", "debug", 1);
    setenv("DEPLOYQ_LOG_FORMAT", "text", 1);
    dq_log_init("deployq-monitor", DQ_LOG_ERROR, 1);
    capture_begin();
    dq_debug("probe");
    char *out = capture_end();

    assert_non_null(strstr(out, " deployq-monitor["));
    assert_non_null(strstr(out, "] debug: probe (test_log.c:"));
    assert_int_not_equal(out[0], '{');
    free(out);
}

static void test_level_parse(void **state)
{
    (void)state;
    assert_int_equal(dq_log_level_parse("debug"), DQ_LOG_DEBUG);
    assert_int_equal(dq_log_level_parse("info"), DQ_LOG_INFO);
    assert_int_equal(dq_log_level_parse("warn"), DQ_LOG_WARN);
    assert_int_equal(dq_log_level_parse("error"), DQ_LOG_ERROR);
    assert_int_equal(dq_log_level_parse("off"), DQ_LOG_OFF);
    assert_int_equal(dq_log_level_parse("verbose"), -1);
    assert_int_equal(dq_log_level_parse(""), -1);
    assert_int_equal(dq_log_level_parse(NULL), -1);
}

static void test_redaction_in_log(void **state)
{
    (void)state;
    dq_log_redact("ghp_s3cr3tT0ken");
    capture_begin();
    dq_error("provider said: bad credentials ghp_s3cr3tT0ken (ghp_s3cr3tT0ken)");
    char *out = capture_end();

    assert_null(strstr(out, "s3cr3t"));
    assert_non_null(strstr(out, "\"msg\":\"provider said: bad credentials *** (***)\""));
    free(out);
}

static void test_redact_rules(void **state)
{
    (void)state;
    char dst[64];

    dq_log_redact("abc"); /* too short: ignored */
    assert_string_equal(dq_redact("abcabc", dst, sizeof dst), "abcabc");

    dq_log_redact("secret");
    dq_log_redact("secret-longer");
    dq_log_redact("secret"); /* registering twice changes nothing */
    assert_string_equal(dq_redact("x=secret-longer;y=secret", dst, sizeof dst), "x=***;y=***");

    char small[5];
    assert_string_equal(dq_redact("0123456789", small, sizeof small), "0123");
    assert_string_equal(dq_redact("secret", small, sizeof small), "***");
    assert_string_equal(dq_redact(NULL, dst, sizeof dst), "");

    dq_log_redact_clear();
    assert_string_equal(dq_redact("secret", dst, sizeof dst), "secret");
}

static void test_no_newline_in_message(void **state)
{
    (void)state;
    dq_log_init("deployq-validator", DQ_LOG_INFO, 0);
    capture_begin();
    dq_info("line one\nline two\r\nend");
    char *out = capture_end();

    assert_non_null(strstr(out, "info: line one line two  end ("));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
}

#define THREADS 4
#define LINES_PER_THREAD 200

static void *log_many(void *arg)
{
    char secret[32];
    snprintf(secret, sizeof secret, "thread-secret-%d", (int)(intptr_t)arg);
    dq_log_redact(secret);
    for (int i = 0; i < LINES_PER_THREAD; i++)
        dq_info("thread %d line %d key %s", (int)(intptr_t)arg, i, secret);
    return NULL;
}

static void test_threads_write_whole_lines(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    capture_begin();
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_many, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *out = capture_end();

    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *obj = dq_json_parse(line, strlen(line), 4096, 2, NULL, NULL, 0);
        if (obj == NULL)
            fail_msg("not one JSON line: %s", line);
        cJSON_Delete(obj);
        lines++;
    }
    assert_int_equal(lines, THREADS * LINES_PER_THREAD);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_json_line_exact, reset),
        cmocka_unit_test_setup(test_text_line_exact, reset),
        cmocka_unit_test_setup(test_level_filter, reset),
        cmocka_unit_test_setup(test_env_overrides, reset),
        cmocka_unit_test_setup(test_level_parse, reset),
        cmocka_unit_test_setup(test_redaction_in_log, reset),
        cmocka_unit_test_setup(test_redact_rules, reset),
        cmocka_unit_test_setup(test_no_newline_in_message, reset),
        cmocka_unit_test_setup(test_threads_write_whole_lines, reset),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    dq_log_redact_clear();
    return failed;
}
