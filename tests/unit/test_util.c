/*
 * test_util.c - util.h: RFC 3339 formatting and parsing (offsets, fractions, junk),
 * durations, UUIDs (random and name-based), hex, SHA-256, strict base64, integer parsing,
 * bounded copies and whole-file reads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

#define T_20261126 INT64_C(1795687200123) /* 2026-11-26T10:00:00.123Z */

static void test_time_format(void **state)
{
    (void)state;
    char out[DQ_TIME_LEN + 1];
    assert_string_equal(dq_time_format(T_20261126, out), "2026-11-26T10:00:00.123Z");
    assert_string_equal(dq_time_format(0, out), "1970-01-01T00:00:00.000Z");
    assert_string_equal(dq_time_format(-1, out), "1969-12-31T23:59:59.999Z");
    assert_int_equal(strlen(dq_time_format(dq_now_ms(), out)), DQ_TIME_LEN);
}

static void test_time_parse_forms(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(dq_time_parse("2026-11-26T10:00:00.123Z", &ms), 0);
    assert_int_equal(ms, T_20261126);
    assert_int_equal(dq_time_parse("2026-11-26T10:00:00Z", &ms), 0);
    assert_int_equal(ms, T_20261126 - 123);
    assert_int_equal(dq_time_parse("2026-11-26T11:30:00.123+01:30", &ms), 0);
    assert_int_equal(ms, T_20261126);
    assert_int_equal(dq_time_parse("2026-11-26T05:00:00.1-05:00", &ms), 0);
    assert_int_equal(ms, T_20261126 - 23);
    assert_int_equal(dq_time_parse("2026-11-26t10:00:00.123456789z", &ms), 0);
    assert_int_equal(ms, T_20261126);
    assert_int_equal(dq_time_parse("2024-02-29T00:00:00Z", &ms), 0);
    assert_int_equal(ms, INT64_C(1709164800000));

    char out[DQ_TIME_LEN + 1];
    int64_t now = dq_now_ms();
    assert_int_equal(dq_time_parse(dq_time_format(now, out), &ms), 0);
    assert_int_equal(ms, now);
}

static void test_time_parse_rejects_junk(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-11-26",
        "2026-11-26T10:00:00",        /* no offset */
        "2026-11-26 10:00:00Z",       /* space instead of T */
        "2026-11-26T10:00:00.Z",      /* empty fraction */
        "2026-11-26T10:00:00Zjunk",
        "2026-11-26T10:00:00+0100",   /* offset without colon */
        "2026-11-26T10:00:00+24:00",
        "2026-13-01T00:00:00Z",
        "2026-02-29T00:00:00Z",       /* not a leap year */
        "2026-11-31T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T10:60:00Z",
        "26-11-26T10:00:00Z",
        "2026-1-26T10:00:00Z",
        " 2026-11-26T10:00:00Z",
    };
    int64_t ms = 42;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (dq_time_parse(bad[i], &ms) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(dq_time_parse(NULL, &ms), -1);
    assert_int_equal(ms, 42);
}

static void test_duration_parse(void **state)
{
    (void)state;
    assert_int_equal(dq_duration_parse("300"), 300000);
    assert_int_equal(dq_duration_parse("300s"), 300000);
    assert_int_equal(dq_duration_parse("1500ms"), 1500);
    assert_int_equal(dq_duration_parse("5m"), 300000);
    assert_int_equal(dq_duration_parse("2h"), 7200000);
    assert_int_equal(dq_duration_parse("1d"), 86400000);
    assert_int_equal(dq_duration_parse("0"), 0);
    assert_int_equal(dq_duration_parse(""), -1);
    assert_int_equal(dq_duration_parse("-5s"), -1);
    assert_int_equal(dq_duration_parse("5x"), -1);
    assert_int_equal(dq_duration_parse("5 s"), -1);
    assert_int_equal(dq_duration_parse("s"), -1);
    assert_int_equal(dq_duration_parse("99999999999999999999d"), -1);
    assert_int_equal(dq_duration_parse("9999999999999999d"), -1);
    assert_int_equal(dq_duration_parse(NULL), -1);
}

static void test_uuid_v4(void **state)
{
    (void)state;
    char a[DQ_UUID_LEN + 1], b[DQ_UUID_LEN + 1];
    assert_int_equal(dq_uuid_v4(a), 0);
    assert_int_equal(dq_uuid_v4(b), 0);
    assert_int_equal(strlen(a), DQ_UUID_LEN);
    assert_true(dq_uuid_valid(a));
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_string_not_equal(a, b);
}

static void test_uuid_from_name(void **state)
{
    (void)state;
    char a[DQ_UUID_LEN + 1], b[DQ_UUID_LEN + 1];
    /* Expected value: SHA-256("deploy/1234")[0..16) with version 5 and variant bits. */
    dq_uuid_from_name("deploy/1234", a);
    assert_string_equal(a, "49dd1596-1be0-5ebd-98cb-e74f2ae51135");
    dq_uuid_from_name("deploy/1234", b);
    assert_string_equal(a, b);
    dq_uuid_from_name("deploy/1235", b);
    assert_string_not_equal(a, b);
    assert_true(dq_uuid_valid(b));
}

static void test_uuid_valid(void **state)
{
    (void)state;
    assert_true(dq_uuid_valid("49dd1596-1be0-5ebd-98cb-e74f2ae51135"));
    /* upper case is not canonical: the schemas refuse it, so must we */
    assert_false(dq_uuid_valid("49DD1596-1BE0-5EBD-98CB-E74F2AE51135"));
    assert_false(dq_uuid_valid("49dd1596-1be0-5ebd-98cb-e74f2aE51135"));
    assert_false(dq_uuid_valid("49dd1596-1be0-5ebd-98cb-e74f2ae5113"));
    assert_false(dq_uuid_valid("49dd1596-1be0-5ebd-98cb-e74f2ae511355"));
    assert_false(dq_uuid_valid("49dd1596x1be0-5ebd-98cb-e74f2ae51135"));
    assert_false(dq_uuid_valid("g9dd1596-1be0-5ebd-98cb-e74f2ae51135"));
    assert_false(dq_uuid_valid(""));
    assert_false(dq_uuid_valid(NULL));
}

static void test_hex_and_sha256(void **state)
{
    (void)state;
    const unsigned char bytes[] = {0x00, 0x0f, 0xa5, 0xff};
    char hex[9];
    assert_string_equal(dq_hex(bytes, sizeof bytes, hex), "000fa5ff");

    char digest[DQ_SHA256_HEX_LEN + 1];
    dq_sha256_hex("hello", 5, digest);
    assert_string_equal(digest, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    dq_sha256_hex("", 0, digest);
    assert_string_equal(digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_base64_round_trip(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i][0]);
        char *enc = dq_base64_encode((const unsigned char *)cases[i][0], n);
        assert_string_equal(enc, cases[i][1]);
        unsigned char dec[16];
        assert_int_equal(dq_base64_decode(enc, dec, sizeof dec), (long)n);
        assert_memory_equal(dec, cases[i][0], n);
        free(enc);
    }

    unsigned char bin[256], back[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    char *enc = dq_base64_encode(bin, sizeof bin);
    assert_int_equal(dq_base64_decode(enc, back, sizeof back), 256);
    assert_memory_equal(bin, back, sizeof bin);
    free(enc);
}

static void test_base64_rejects_malformed(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dq_base64_decode("Zm9", out, sizeof out), -1);      /* not a multiple of 4 */
    assert_int_equal(dq_base64_decode("Zm9v!A==", out, sizeof out), -1); /* bad character */
    assert_int_equal(dq_base64_decode("Zm 9v", out, sizeof out), -1);
    assert_int_equal(dq_base64_decode("Zm9v\nZm9v", out, sizeof out), -1);
    assert_int_equal(dq_base64_decode("Z===", out, sizeof out), -1);
    assert_int_equal(dq_base64_decode("Zg==Zg==", out, sizeof out), -1); /* padding inside */
    assert_int_equal(dq_base64_decode("Zm9vYmFy", out, 5), -1);          /* does not fit */
    assert_int_equal(dq_base64_decode("Zm9vYmFy", out, 6), 6);
    assert_int_equal(dq_base64_decode(NULL, out, sizeof out), -1);
}

static void test_strlcpy(void **state)
{
    (void)state;
    char dst[5];
    assert_int_equal(dq_strlcpy(dst, "abc", sizeof dst), 3);
    assert_string_equal(dst, "abc");
    assert_int_equal(dq_strlcpy(dst, "abcdefgh", sizeof dst), 8);
    assert_string_equal(dst, "abcd");
    memset(dst, 'x', sizeof dst);
    assert_int_equal(dq_strlcpy(dst, "abc", 0), 3);
    assert_int_equal(dst[0], 'x');
}

static void test_parse_int(void **state)
{
    (void)state;
    long long v = 0;
    assert_int_equal(dq_parse_int("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(dq_parse_int("-7", -10, 10, &v), 0);
    assert_int_equal(v, -7);
    v = 99;
    assert_int_equal(dq_parse_int("101", 0, 100, &v), -1);
    assert_int_equal(dq_parse_int("-1", 0, 100, &v), -1);
    assert_int_equal(dq_parse_int("4x", 0, 100, &v), -1);
    assert_int_equal(dq_parse_int(" 4", 0, 100, &v), -1);
    assert_int_equal(dq_parse_int("", 0, 100, &v), -1);
    assert_int_equal(dq_parse_int("99999999999999999999", 0, LLONG_MAX, &v), -1);
    assert_int_equal(dq_parse_int(NULL, 0, 100, &v), -1);
    assert_int_equal(v, 99);
}

static void test_read_file(void **state)
{
    (void)state;
    char dir[64], path[128];
    assert_int_equal(dq_test_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/f.txt", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 2000; i++)
        fputs("0123456789", fp);
    fclose(fp);

    size_t len = 0;
    char *text = dq_read_file(path, 20000, &len);
    assert_non_null(text);
    assert_int_equal(len, 20000);
    assert_int_equal(strlen(text), 20000);
    assert_memory_equal(text + 19990, "0123456789", 10);
    free(text);

    errno = 0;
    assert_null(dq_read_file(path, 19999, &len));
    assert_int_equal(errno, EFBIG);

    snprintf(path, sizeof path, "%s/missing", dir);
    assert_null(dq_read_file(path, 100, NULL));
    assert_int_equal(errno, ENOENT);
    assert_int_equal(dq_test_rm_rf(dir), 0);
}

static void test_actor_and_clocks(void **state)
{
    (void)state;
    char host[256], expected[400], out[400];
    assert_int_equal(gethostname(host, sizeof host), 0);
    snprintf(expected, sizeof expected, "deployq-executor@%s/%ld", host, (long)getpid());
    assert_string_equal(dq_actor("deployq-executor", out, sizeof out), expected);

    int64_t t0 = dq_mono_ms();
    dq_sleep_ms(30);
    int64_t waited = dq_mono_ms() - t0;
    assert_true(waited >= 30 && waited < 1000);
    assert_true(dq_now_ms() > T_20261126 - INT64_C(365) * 86400000 * 2);
}

/* The deadline is ms ahead on the monotonic clock, with tv_nsec kept in range. */
static void test_mono_deadline(void **state)
{
    static const int64_t cases[] = {0, 1, 999, 1000, 1500, 10000, 86400001};
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct timespec before, dl, after;
        int64_t b, a, d;

        clock_gettime(CLOCK_MONOTONIC, &before);
        dq_mono_deadline(cases[i], &dl);
        clock_gettime(CLOCK_MONOTONIC, &after);
        assert_true(dl.tv_nsec >= 0 && dl.tv_nsec < 1000000000L);
        b = (int64_t)before.tv_sec * 1000000000LL + before.tv_nsec;
        a = (int64_t)after.tv_sec * 1000000000LL + after.tv_nsec;
        d = (int64_t)dl.tv_sec * 1000000000LL + dl.tv_nsec;
        assert_true(d >= b + cases[i] * 1000000LL);
        assert_true(d <= a + cases[i] * 1000000LL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_mono_deadline),
        cmocka_unit_test(test_time_parse_forms),
        cmocka_unit_test(test_time_parse_rejects_junk),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_uuid_v4),
        cmocka_unit_test(test_uuid_from_name),
        cmocka_unit_test(test_uuid_valid),
        cmocka_unit_test(test_hex_and_sha256),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_base64_rejects_malformed),
        cmocka_unit_test(test_strlcpy),
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_actor_and_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
