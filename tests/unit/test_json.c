/*
 * test_json.c - json.h: the size and depth limits hold before parsing, strings (with
 * escaped quotes and brackets) do not count as nesting, trailing junk and non-object roots
 * are refused with the exact one-line reasons callers show.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "json.h"

#define LIMITS DQ_JSON_MAX_BYTES_DEFAULT, DQ_JSON_MAX_DEPTH_DEFAULT

static cJSON *parse(const char *text, dq_json_status *st, char *err, size_t errlen)
{
    return dq_json_parse(text, strlen(text), LIMITS, st, err, errlen);
}

/* n nested arrays around an empty object: "[[...{}...]]", depth n + 1. */
static char *nested(int n)
{
    char *s = malloc((size_t)n * 2 + 3);
    assert_non_null(s);
    memset(s, '[', (size_t)n);
    memcpy(s + n, "{}", 2);
    memset(s + n + 2, ']', (size_t)n);
    s[2 * n + 2] = '\0';
    return s;
}

static void test_depth_counts_nesting(void **state)
{
    (void)state;
    const char *flat = "{\"a\":1,\"b\":[1,2],\"c\":{}}";
    assert_int_equal(dq_json_depth(flat, strlen(flat), 16), 2);
    assert_int_equal(dq_json_depth("", 0, 16), 0);
    assert_int_equal(dq_json_depth("42", 2, 16), 0);

    char *deep = nested(15);
    assert_int_equal(dq_json_depth(deep, strlen(deep), 16), 16);
    /* It stops counting once past the limit. */
    assert_int_equal(dq_json_depth(deep, strlen(deep), 3), 4);
    free(deep);
}

static void test_depth_skips_strings(void **state)
{
    (void)state;
    const char *s = "{\"k\":\"[[[{{{ \\\" ]]] {{\",\"k2\":\"\\\\\",\"k3\":[\"[\"]}";
    assert_int_equal(dq_json_depth(s, strlen(s), 16), 2);
}

static void test_parse_ok(void **state)
{
    (void)state;
    dq_json_status st = DQ_JSON_INVALID;
    char err[128] = "";
    cJSON *root = parse(" {\"service\":\"api\",\"n\":3}\r\n\t ", &st, err, sizeof err);
    assert_non_null(root);
    assert_int_equal(st, DQ_JSON_OK);
    assert_string_equal(dq_json_str(root, "service"), "api");
    assert_null(dq_json_str(root, "n"));
    assert_null(dq_json_str(root, "missing"));
    assert_true(dq_json_num(root, "n", -1) == 3.0);
    assert_true(dq_json_num(root, "service", -1) == -1.0);
    char *text = dq_json_print(root);
    assert_string_equal(text, "{\"service\":\"api\",\"n\":3}");
    free(text);
    cJSON_Delete(root);
}

static void test_parse_not_nul_terminated(void **state)
{
    (void)state;
    const char buf[] = {'{', '"', 'a', '"', ':', '1', '}', 'X'};
    char err[128];
    cJSON *root = dq_json_parse(buf, 7, LIMITS, NULL, err, sizeof err);
    assert_non_null(root);
    assert_true(dq_json_num(root, "a", 0) == 1.0);
    cJSON_Delete(root);
}

static void test_too_large(void **state)
{
    (void)state;
    char *big = malloc(70000);
    assert_non_null(big);
    memset(big, ' ', 70000);
    big[0] = '{';
    big[69999] = '}';
    dq_json_status st = DQ_JSON_OK;
    char err[128];
    assert_null(dq_json_parse(big, 70000, LIMITS, &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_TOO_LARGE);
    assert_string_equal(err, "request is 70000 bytes, limit 65536");
    free(big);
}

static void test_too_deep(void **state)
{
    (void)state;
    dq_json_status st = DQ_JSON_OK;
    char err[128];

    char *ok = nested(15); /* depth 16: allowed */
    cJSON *root = dq_json_parse(ok, strlen(ok), LIMITS, &st, err, sizeof err);
    assert_null(root); /* the root is an array, so it is refused, but not for depth */
    assert_int_equal(st, DQ_JSON_NOT_OBJECT);
    free(ok);

    char obj[256] = "";
    for (int i = 0; i < 16; i++)
        strncat(obj, "{\"a\":", sizeof obj - strlen(obj) - 1);
    strncat(obj, "1", sizeof obj - strlen(obj) - 1);
    for (int i = 0; i < 16; i++)
        strncat(obj, "}", sizeof obj - strlen(obj) - 1);
    root = parse(obj, &st, err, sizeof err);
    assert_non_null(root);
    cJSON_Delete(root);

    char *deep = nested(16); /* depth 17 */
    assert_null(dq_json_parse(deep, strlen(deep), LIMITS, &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_TOO_DEEP);
    assert_string_equal(err, "JSON nesting depth exceeds 16");
    free(deep);

    char *hostile = nested(100000); /* would recurse 100000 times in cJSON */
    assert_null(dq_json_parse(hostile, strlen(hostile), SIZE_MAX, 16, &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_TOO_DEEP);
    free(hostile);
}

static void test_invalid(void **state)
{
    (void)state;
    dq_json_status st = DQ_JSON_OK;
    char err[128];

    assert_null(parse("{\"service\":\"api\"}x", &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_INVALID);
    assert_string_equal(err, "invalid JSON at byte 17");

    assert_null(parse("{\"service\":\"api\"}{}", &st, err, sizeof err));
    assert_string_equal(err, "invalid JSON at byte 17");

    assert_null(parse("{\"a\":tru}", &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_INVALID);
    assert_int_equal(strncmp(err, "invalid JSON at byte ", 21), 0);

    assert_null(parse("", &st, err, sizeof err));
    assert_string_equal(err, "invalid JSON at byte 0");

    const char nul[] = "{\"a\":\"x\0y\"}";
    assert_null(dq_json_parse(nul, sizeof nul - 1, LIMITS, &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_INVALID);
    assert_string_equal(err, "invalid JSON at byte 7");

    assert_null(parse("\x01{}", &st, err, sizeof err));
    assert_string_equal(err, "invalid JSON at byte 0");
}

/* An escaped NUL would cut a string short inside cJSON: "api\u0000; rm -rf /" must not
 * be read as "api". Other escapes stay fine. */
static void test_escaped_nul_refused(void **state)
{
    (void)state;
    dq_json_status st = DQ_JSON_OK;
    char err[128];
    cJSON *ok;

    assert_null(parse("{\"service\":\"api\\u0000; rm -rf /\"}", &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_INVALID);
    assert_string_equal(err, "invalid JSON at byte 15");
    ok = parse("{\"a\":\"\\u0041\\\\u0000\"}", &st, err, sizeof err);
    assert_non_null(ok); /* an escaped backslash followed by u0000 is text, not NUL */
    assert_string_equal(cJSON_GetObjectItem(ok, "a")->valuestring, "A\\u0000");
    cJSON_Delete(ok);
}

/* A member twice in one object means two things to two parsers: refused, at any depth. */
static void test_duplicate_member_refused(void **state)
{
    (void)state;
    dq_json_status st = DQ_JSON_OK;
    char err[128];
    cJSON *ok;

    assert_null(parse("{\"service\":\"api\",\"service\":\"db\"}", &st, err, sizeof err));
    assert_int_equal(st, DQ_JSON_INVALID);
    assert_string_equal(err, "duplicate member \"service\"");
    assert_null(parse("{\"a\":[{\"x\":1,\"y\":2,\"x\":3}]}", &st, err, sizeof err));
    assert_string_equal(err, "duplicate member \"x\"");
    ok = parse("{\"a\":{\"x\":1},\"b\":{\"x\":2}}", &st, err, sizeof err);
    assert_non_null(ok); /* the same name in two objects is fine */
    cJSON_Delete(ok);
}

static void test_not_object(void **state)
{
    (void)state;
    static const char *const roots[] = {"[1,2]", "\"s\"", "42", "null", "true"};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        dq_json_status st = DQ_JSON_OK;
        char err[128] = "";
        assert_null(parse(roots[i], &st, err, sizeof err));
        assert_int_equal(st, DQ_JSON_NOT_OBJECT);
        assert_string_equal(err, "JSON root is not an object");
    }
    /* Status and message are optional. */
    assert_null(parse("[]", NULL, NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth_counts_nesting),
        cmocka_unit_test(test_depth_skips_strings),
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_not_nul_terminated),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_too_deep),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_escaped_nul_refused),
        cmocka_unit_test(test_duplicate_member_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
