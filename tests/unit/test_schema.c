/*
 * test_schema.c - unit tests of common/base/schema.c, the JSON Schema validator.
 *
 * Keyword by keyword, each case asserts the exact error text a user (or a deploy.rejected
 * event) will see. Then the real schemas/ directory (DEPLOYQ_SCHEMAS) is loaded and a good
 * event of every type must pass while broken ones fail with the expected pointer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schema.h"

static const char *schemas_dir(void)
{
    const char *d = getenv("DEPLOYQ_SCHEMAS");
    return d ? d : DQ_SCHEMAS_SOURCE;
}

static dq_schema *compile_text(const char *text)
{
    char err[512];
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    dq_schema *s = dq_schema_compile(doc, err, sizeof err);
    if (!s)
        fail_msg("compile failed: %s", err);
    cJSON_Delete(doc);
    return s;
}

/* Validate instance text against schema text; returns the error count, err filled. */
static int check(const char *schema, const char *instance, char *err, size_t errlen)
{
    dq_schema *s = compile_text(schema);
    cJSON *inst = cJSON_Parse(instance);
    assert_non_null(inst);
    int n = dq_schema_validate(s, inst, err, errlen);
    cJSON_Delete(inst);
    dq_schema_free(s);
    return n;
}

static void expect_valid(const char *schema, const char *instance)
{
    char err[1024];
    int n = check(schema, instance, err, sizeof err);
    if (n != 0)
        fail_msg("%s against %s: expected valid, got: %s", instance, schema, err);
    assert_string_equal(err, "");
}

static void expect_error(const char *schema, const char *instance, int count, const char *want)
{
    char err[2048];
    int n = check(schema, instance, err, sizeof err);
    assert_string_equal(err, want);
    assert_int_equal(n, count);
}

/* The compile error of a schema text (asserting that it does not compile). */
static void expect_compile_error(const char *text, const char *want)
{
    char err[512];
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    dq_schema *s = dq_schema_compile(doc, err, sizeof err);
    cJSON_Delete(doc);
    assert_null(s);
    assert_string_equal(err, want);
}

static void test_type(void **state)
{
    expect_valid("{\"type\":\"integer\"}", "5");
    expect_valid("{\"type\":\"integer\"}", "5.0"); /* no fractional part: an integer */
    expect_valid("{\"type\":\"integer\"}", "-0");
    expect_error("{\"type\":\"integer\"}", "1.5", 1, "/: expected integer, got number");
    expect_error("{\"type\":\"integer\"}", "true", 1, "/: expected integer, got boolean");
    expect_error("{\"type\":\"integer\"}", "\"5\"", 1, "/: expected integer, got string");
    expect_valid("{\"type\":\"number\"}", "1.5");
    expect_error("{\"type\":\"number\"}", "null", 1, "/: expected number, got null");
    expect_valid("{\"type\":\"boolean\"}", "false");
    expect_error("{\"type\":\"object\"}", "[]", 1, "/: expected object, got array");
    expect_error("{\"type\":\"array\"}", "{}", 1, "/: expected array, got object");
    expect_valid("{\"type\":[\"string\",\"null\"]}", "null");
    expect_valid("{\"type\":[\"string\",\"null\"]}", "\"x\"");
    expect_error("{\"type\":[\"string\",\"null\"]}", "3", 1, "/: expected null or string, got number");
    expect_valid("{}", "[1,{\"a\":null}]");
}

static void test_required_and_properties(void **state)
{
    const char *s = "{\"type\":\"object\",\"required\":[\"nonce\",\"service\"],"
                    "\"properties\":{\"service\":{\"type\":\"string\"},"
                    "\"source\":{\"type\":\"object\",\"properties\":{\"partition\":{\"minimum\":0}}}}}";
    expect_valid(s, "{\"nonce\":1,\"service\":\"api\"}");
    expect_error(s, "{\"service\":\"api\"}", 1, "/nonce: required");
    expect_error(s, "{}", 2, "/nonce: required; /service: required");
    expect_error(s, "{\"nonce\":1,\"service\":\"api\",\"source\":{\"partition\":-1}}", 1,
                 "/source/partition: below minimum 0");
    /* Member names are case-sensitive: "Service" is not "service". */
    expect_error(s, "{\"nonce\":1,\"Service\":\"api\"}", 1, "/service: required");
    /* A member given twice is checked twice, whichever copy a reader would pick. */
    expect_error(s, "{\"nonce\":1,\"service\":\"api\",\"service\":7}", 1,
                 "/service: expected string, got number");
    /* properties and required say nothing about non-objects. */
    expect_valid("{\"required\":[\"a\"],\"properties\":{\"a\":false}}", "\"not an object\"");
}

static void test_additional_properties(void **state)
{
    const char *closed = "{\"properties\":{\"a\":{}},\"additionalProperties\":false}";
    expect_valid(closed, "{\"a\":1}");
    expect_error(closed, "{\"a\":1,\"extra\":2}", 1, "/extra: additional property not allowed");
    const char *typed = "{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"string\"}}";
    expect_valid(typed, "{\"a\":1,\"b\":\"x\"}");
    expect_error(typed, "{\"a\":1,\"x\":1}", 1, "/x: expected string, got number");
    expect_valid("{\"properties\":{\"a\":{}},\"additionalProperties\":true}", "{\"zz\":1}");
    expect_valid("{\"properties\":{\"a\":{}}}", "{\"zz\":1}");
}

static void test_pointer_escaping(void **state)
{
    const char *closed = "{\"additionalProperties\":false}";
    expect_error(closed, "{\"a/b~c\":1}", 1, "/a~1b~0c: additional property not allowed");
    /* A control character in a member name must not reach a log line as is. */
    expect_error(closed, "{\"x\\ny\":1}", 1, "/x?y: additional property not allowed");
    expect_error("{\"items\":{\"properties\":{\"k\":{\"type\":\"null\"}}}}", "[{},{\"k\":1}]", 1,
                 "/1/k: expected null, got number");
}

static void test_enum_and_const(void **state)
{
    const char *s = "{\"properties\":{\"strategy\":{\"enum\":[\"rolling\",\"blue-green\"]}}}";
    expect_valid(s, "{\"strategy\":\"blue-green\"}");
    expect_error(s, "{\"strategy\":\"canary\"}", 1, "/strategy: not one of [rolling, blue-green]");
    expect_error(s, "{\"strategy\":\"Rolling\"}", 1, "/strategy: not one of [rolling, blue-green]");
    expect_error("{\"enum\":[1,null,\"a\",[true]]}", "2", 1, "/: not one of [1, null, a, [true]]");
    expect_valid("{\"enum\":[1,null,\"a\",[true]]}", "[true]");
    expect_valid("{\"enum\":[1]}", "1.0");
    const char *c = "{\"properties\":{\"schema\":{\"const\":\"deployq.event/v1\"}}}";
    expect_valid(c, "{\"schema\":\"deployq.event/v1\"}");
    expect_error(c, "{\"schema\":\"deployq.event/v2\"}", 1, "/schema: not equal to deployq.event/v1");
    expect_error(c, "{\"schema\":1}", 1, "/schema: not equal to deployq.event/v1");
    expect_error("{\"const\":{\"a\":1}}", "{\"a\":2}", 1, "/: not equal to {\"a\":1}");
}

static void test_pattern(void **state)
{
    /* JSON Schema patterns search: unanchored unless the pattern anchors. */
    expect_valid("{\"pattern\":\"b+\"}", "\"abbc\"");
    expect_error("{\"pattern\":\"b+\"}", "\"ac\"", 1, "/: does not match b+");
    const char *s = "{\"properties\":{\"service\":{\"pattern\":\"^[a-z0-9][a-z0-9._-]{0,62}$\"}}}";
    expect_valid(s, "{\"service\":\"api-v2.eu_1\"}");
    expect_error(s, "{\"service\":\"API\"}", 1,
                 "/service: does not match ^[a-z0-9][a-z0-9._-]{0,62}$");
    /* $ is the end of the string, not "before a final newline". */
    expect_error(s, "{\"service\":\"api\\n\"}", 1,
                 "/service: does not match ^[a-z0-9][a-z0-9._-]{0,62}$");
    expect_error(s, "{\"service\":\"\\u00e9\"}", 1,
                 "/service: does not match ^[a-z0-9][a-z0-9._-]{0,62}$");
    /* Printable ASCII only, whatever the locale. */
    expect_valid("{\"pattern\":\"^[!-~]+$\"}", "\"v1.2.3+build~7\"");
    expect_error("{\"pattern\":\"^[!-~]+$\"}", "\"v1 2\"", 1, "/: does not match ^[!-~]+$");
    expect_error("{\"pattern\":\"^[!-~]+$\"}", "\"v\\u00e9\"", 1, "/: does not match ^[!-~]+$");
    expect_valid("{\"pattern\":\"^x\"}", "5"); /* only strings */
}

/* A program that switches to a UTF-8 locale must not change what a pattern means. */
static void test_pattern_ignores_locale(void **state)
{
    if (!setlocale(LC_ALL, "C.UTF-8"))
        skip();
    dq_schema *s = compile_text("{\"pattern\":\"^[!-~]+$\"}");
    char err[128];
    cJSON *inst = cJSON_CreateString("v\xc3\xa9");
    int n = dq_schema_validate(s, inst, err, sizeof err);
    setlocale(LC_ALL, "C");
    assert_int_equal(n, 1);
    assert_string_equal(err, "/: does not match ^[!-~]+$");
    cJSON_Delete(inst);
    dq_schema_free(s);
}

static void test_lengths_in_code_points(void **state)
{
    const char *s = "{\"minLength\":2,\"maxLength\":3}";
    expect_error(s, "\"\\u00e9\"", 1, "/: shorter than minimum length 2");  /* 2 bytes, 1 point */
    expect_valid(s, "\"\\u00e9\\u00e9\\u00e9\"");                               /* 6 bytes */
    expect_valid(s, "\"\\ud83d\\ude00\\ud83d\\ude00\"");                       /* 8 bytes */
    expect_error(s, "\"\\u00e9\\u00e9\\u00e9\\u00e9\"", 1, "/: longer than maximum length 3");
    expect_valid(s, "\"ab\"");
    expect_error(s, "\"abcd\"", 1, "/: longer than maximum length 3");
    expect_valid("{\"minLength\":0,\"maxLength\":0}", "\"\"");

    /* Raw invalid UTF-8 cannot be measured: it is refused, not miscounted. */
    char err[256];
    dq_schema *sc = compile_text(s);
    cJSON *inst = cJSON_CreateString("a\xff");
    assert_int_equal(dq_schema_validate(sc, inst, err, sizeof err), 1);
    assert_string_equal(err, "/: not valid UTF-8");
    cJSON_Delete(inst);
    inst = cJSON_CreateString("\xc0\xaf"); /* overlong '/' */
    assert_int_equal(dq_schema_validate(sc, inst, err, sizeof err), 1);
    assert_string_equal(err, "/: not valid UTF-8");
    cJSON_Delete(inst);
    dq_schema_free(sc);
}

static void test_minimum_maximum(void **state)
{
    const char *s = "{\"properties\":{\"fence\":{\"type\":\"integer\",\"minimum\":0},"
                    "\"http_status\":{\"minimum\":100,\"maximum\":599},"
                    "\"ratio\":{\"maximum\":0.5}}}";
    expect_valid(s, "{\"fence\":0,\"http_status\":599,\"ratio\":0.5}");
    expect_error(s, "{\"fence\":-1}", 1, "/fence: below minimum 0");
    expect_error(s, "{\"fence\":1.5}", 1, "/fence: expected integer, got number");
    expect_error(s, "{\"http_status\":600}", 1, "/http_status: above maximum 599");
    expect_error(s, "{\"http_status\":99.5}", 1, "/http_status: below minimum 100");
    expect_error(s, "{\"ratio\":0.75}", 1, "/ratio: above maximum 0.5");
    expect_valid(s, "{\"http_status\":\"600\"}"); /* only numbers */
}

static void test_items(void **state)
{
    const char *s = "{\"properties\":{\"reasons\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":2,"
                    "\"items\":{\"type\":\"object\",\"required\":[\"code\"],"
                    "\"properties\":{\"code\":{\"type\":\"string\"}}}}}}";
    expect_valid(s, "{\"reasons\":[{\"code\":\"stale\"}]}");
    expect_error(s, "{\"reasons\":[]}", 1, "/reasons: fewer than 1 items");
    expect_error(s, "{\"reasons\":[{\"code\":\"a\"},{\"code\":\"b\"},{\"code\":\"c\"}]}", 1,
                 "/reasons: more than 2 items");
    expect_error(s, "{\"reasons\":[{\"code\":\"a\"},{\"code\":5}]}", 1,
                 "/reasons/1/code: expected string, got number");
    expect_error(s, "{\"reasons\":[{}]}", 1, "/reasons/0/code: required");
    expect_error("{\"items\":false}", "[1]", 1, "/0: not allowed");
    expect_valid("{\"items\":false}", "[]");
    expect_valid("{\"items\":true}", "[1,\"x\"]");
}

static void test_boolean_schemas(void **state)
{
    expect_error("{\"properties\":{\"x\":false}}", "{\"x\":1}", 1, "/x: not allowed");
    expect_valid("{\"properties\":{\"x\":false}}", "{\"y\":1}");
    expect_valid("true", "{\"anything\":[1,2]}");
    expect_error("false", "1", 1, "/: not allowed");
}

static void test_date_time(void **state)
{
    static const char *const good[] = {
        "2026-11-26T10:00:00Z",       "2026-11-26T10:00:00.123Z",       "2026-11-26T10:00:00+02:00",
        "2026-11-26T10:00:00.5-07:30", "2028-02-29T00:00:00Z",          "2000-02-29T00:00:00Z",
        "2026-12-31T23:59:60Z",       "0000-01-01T00:00:00.000000001Z", NULL,
    };
    static const char *const bad[] = {
        "2026-11-26",                 "2026-11-26T10:00:00",        "2026-11-26 10:00:00Z",
        "2026-11-26t10:00:00Z",       "2026-11-26T10:00:00z",       "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",       "2026-04-31T00:00:00Z",       "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",       "2026-01-00T00:00:00Z",       "2026-11-26T24:00:00Z",
        "2026-11-26T10:60:00Z",       "2026-11-26T10:00:61Z",       "2026-11-26T10:00:00.Z",
        "2026-11-26T10:00:00+0200",   "2026-11-26T10:00:00+24:00",  "2026-11-26T10:00:00+01:60",
        "2026-11-26T10:00:00Z ",      "26-11-26T10:00:00Z",         "2026-1a-26T10:00:00Z",
        "",                           NULL,
    };
    const char *s = "{\"format\":\"date-time\"}";
    char inst[128];
    for (size_t i = 0; good[i]; i++) {
        snprintf(inst, sizeof inst, "\"%s\"", good[i]);
        expect_valid(s, inst);
    }
    for (size_t i = 0; bad[i]; i++) {
        snprintf(inst, sizeof inst, "\"%s\"", bad[i]);
        expect_error(s, inst, 1, "/: not a date-time");
    }
    expect_valid(s, "5"); /* format only speaks about strings */
}

static void test_error_bounds(void **state)
{
    const char *s = "{\"required\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\"]}";
    expect_error(s, "{}", 10,
                 "/a: required; /b: required; /c: required; /d: required; /e: required; "
                 "/f: required; /g: required; /h: required; and 2 more");
    char small[16];
    memset(small, 'x', sizeof small);
    assert_int_equal(check(s, "{}", small, sizeof small), 10);
    assert_string_equal(small, "/a: required; /");
    assert_int_equal(check(s, "{}", NULL, 0), 10);
    /* Errors stay empty for a valid instance even when the buffer held text before. */
    char err[64] = "stale";
    assert_int_equal(check(s, "{\"a\":1,\"b\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"g\":1,\"h\":1,"
                              "\"i\":1,\"j\":1}",
                           err, sizeof err),
                     0);
    assert_string_equal(err, "");
}

static void test_compile_errors(void **state)
{
    expect_compile_error("{\"properties\":{\"x\":{\"oneOf\":[]}}}", "/properties/x/oneOf: unknown keyword");
    expect_compile_error("{\"$ref\":\"#/x\"}", "/$ref: unknown keyword");
    expect_compile_error("{\"type\":\"int\"}", "/type: not a type name");
    expect_compile_error("{\"type\":[]}", "/type: must not be empty");
    expect_compile_error("{\"type\":[\"string\",\"string\"]}", "/type: type listed twice");
    expect_compile_error("{\"format\":\"email\"}", "/format: only \"date-time\" is supported");
    expect_compile_error("{\"minLength\":-1}", "/minLength: must be a non-negative integer");
    expect_compile_error("{\"maxItems\":1.5}", "/maxItems: must be a non-negative integer");
    expect_compile_error("{\"minLength\":3,\"maxLength\":2}", "/: minLength is above maxLength");
    expect_compile_error("{\"minimum\":\"0\"}", "/minimum: must be a number");
    expect_compile_error("{\"required\":\"a\"}", "/required: must be an array of strings");
    expect_compile_error("{\"required\":[\"a\",\"a\"]}", "/required: a listed twice");
    expect_compile_error("{\"enum\":[]}", "/enum: must be a non-empty array");
    expect_compile_error("{\"properties\":[]}", "/properties: must be an object");
    expect_compile_error("{\"items\":5}", "/items: a schema must be an object or a boolean");
    expect_compile_error("{\"items\":[{}]}", "/items: a schema must be an object or a boolean");
    expect_compile_error("{\"properties\":{\"a/b\":{\"additionalProperties\":7}}}",
                         "/properties/a~1b/additionalProperties: a schema must be an object or a boolean");
    expect_compile_error("{\"$schema\":\"http://json-schema.org/draft-07/schema#\"}",
                         "/$schema: only https://json-schema.org/draft/2020-12/schema is supported");
    expect_compile_error("3", "/: a schema must be an object or a boolean");
    expect_compile_error("{\"pattern\":\"a\",\"pattern\":\"b\"}", "/pattern: keyword given twice");

    char err[512];
    cJSON *doc = cJSON_Parse("{\"pattern\":\"([a-z\"}");
    assert_null(dq_schema_compile(doc, err, sizeof err));
    assert_memory_equal(err, "/pattern: bad pattern: ", strlen("/pattern: bad pattern: "));
    assert_true(strlen(err) > strlen("/pattern: bad pattern: "));
    cJSON_Delete(doc);
    assert_null(dq_schema_compile(NULL, err, sizeof err));
    assert_string_equal(err, "no schema document");

    /* Annotations are accepted anywhere and change nothing. */
    dq_schema *s = compile_text("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
                                "\"$id\":\"x\",\"title\":\"t\",\"description\":\"d\",\"$comment\":\"c\","
                                "\"examples\":[1],\"properties\":{\"a\":{\"default\":3}}}");
    dq_schema_free(s);
}

static void test_null_arguments(void **state)
{
    char err[64];
    dq_schema_free(NULL);
    dq_schema_set_free(NULL);
    assert_int_equal(dq_schema_validate(NULL, NULL, err, sizeof err), 1);
    assert_string_equal(err, "/: no schema");
    assert_null(dq_schema_set_event(NULL, "deploy.started"));
    assert_null(dq_schema_set_envelope(NULL));
    assert_int_equal(dq_schema_validate_event(NULL, NULL, err, sizeof err), 1);
    assert_string_equal(err, "/: no schemas");
}

/* ---- files ---- */

static char tmpdir[64];

static void write_file(const char *dir, const char *name, const char *text, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void remove_tree(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int make_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_schema.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int drop_tmpdir(void **state)
{
    remove_tree(tmpdir);
    return 0;
}

static void test_load_file(void **state)
{
    char err[512], path[256], want[512];
    /* Exactly 1 MiB loads; one byte more does not. */
    size_t limit = 1024 * 1024;
    char *big = malloc(limit + 1);
    assert_non_null(big);
    memset(big, ' ', limit + 1);
    memcpy(big, "{\"type\":\"string\"}", 17);
    write_file(tmpdir, "max.json", big, limit);
    write_file(tmpdir, "over.json", big, limit + 1);
    free(big);

    snprintf(path, sizeof path, "%s/max.json", tmpdir);
    dq_schema *s = dq_schema_load_file(path, err, sizeof err);
    assert_non_null(s);
    dq_schema_free(s);

    snprintf(path, sizeof path, "%s/over.json", tmpdir);
    assert_null(dq_schema_load_file(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: larger than 1 MiB", path);
    assert_string_equal(err, want);

    write_file(tmpdir, "trailing.json", "{} x", 4);
    snprintf(path, sizeof path, "%s/trailing.json", tmpdir);
    assert_null(dq_schema_load_file(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: not valid JSON (at byte 3)", path);
    assert_string_equal(err, want);

    write_file(tmpdir, "nul.json", "{}\0{\"oneOf\":[]}", 15);
    snprintf(path, sizeof path, "%s/nul.json", tmpdir);
    assert_null(dq_schema_load_file(path, err, sizeof err));

    write_file(tmpdir, "unknown.json", "{\"anyOf\":[]}", 12);
    snprintf(path, sizeof path, "%s/unknown.json", tmpdir);
    assert_null(dq_schema_load_file(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: /anyOf: unknown keyword", path);
    assert_string_equal(err, want);

    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    assert_null(dq_schema_load_file(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(err, want);
}

/* A schemas/ directory whose envelope knows a type that has no events/<type>.json. */
static void test_set_missing_event_schema(void **state)
{
    char dir[128], events[160], err[512];
    snprintf(dir, sizeof dir, "%s/set", tmpdir);
    snprintf(events, sizeof events, "%s/events", dir);
    assert_int_equal(mkdir(dir, 0700), 0);

    assert_null(dq_schema_set_load(dir, err, sizeof err));
    char want[512];
    snprintf(want, sizeof want, "%s/envelope.json: No such file or directory", dir);
    assert_string_equal(err, want);

    const char *env = "{\"type\":\"object\",\"required\":[\"type\",\"data\"],"
                      "\"properties\":{\"type\":{\"enum\":[\"a.b\",\"c.d\"]},\"data\":{\"type\":\"object\"}}}";
    write_file(dir, "envelope.json", env, strlen(env));
    write_file(dir, "request.json", "{}", 2);
    write_file(dir, "signed.json", "{}", 2);
    assert_null(dq_schema_set_load(dir, err, sizeof err));
    snprintf(want, sizeof want, "%s: No such file or directory", events);
    assert_string_equal(err, want);

    assert_int_equal(mkdir(events, 0700), 0);
    const char *ab = "{\"required\":[\"n\"]}";
    write_file(events, "a.b.json", ab, strlen(ab));
    write_file(events, "notes.txt", "x", 1); /* not a schema: ignored */
    dq_schema_set *set = dq_schema_set_load(dir, err, sizeof err);
    assert_non_null(set);
    assert_non_null(dq_schema_set_event(set, "a.b"));
    assert_null(dq_schema_set_event(set, "c.d"));
    assert_null(dq_schema_set_event(set, "notes"));

    cJSON *ev = cJSON_Parse("{\"type\":\"c.d\",\"data\":{}}");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_string_equal(err, "/type: no schema for this event type");
    cJSON_Delete(ev);
    ev = cJSON_Parse("{\"type\":\"a.b\",\"data\":{}}");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_string_equal(err, "/data/n: required");
    cJSON_Delete(ev);
    dq_schema_set_free(set);

    write_file(events, "bad.json", "{\"if\":{}}", 9);
    assert_null(dq_schema_set_load(dir, err, sizeof err));
    snprintf(want, sizeof want, "%s/bad.json: /if: unknown keyword", events);
    assert_string_equal(err, want);
}

/* ---- the real schemas/ ---- */

static const char *const event_types[] = {
    "deploy.validated",   "deploy.rejected",    "deploy.awaiting_approval", "deploy.started",
    "provider.failed",    "deploy.succeeded",   "deploy.failed",            "monitor.started",
    "health.degraded",    "deploy.verified",    "rollback.requested",       "rollback.started",
    "rollback.succeeded", "rollback.failed",    "traffic.switched",         "notification.sent",
    "notification.failed", "approval.refused", "drift.detected", "canary.step",
    "canary.analysis",     "canary.promoted",  "canary.aborted",  NULL,
};

/* A good data object of each type, in the order of event_types. */
static const char *const good_data[] = {
    "{\"key_id\":\"ci-1\",\"issued_at\":\"2026-11-26T10:00:00.000Z\",\"strategy\":\"rolling\","
    "\"source\":{\"topic\":\"deployq.requests\",\"partition\":0,\"offset\":12}}",
    "{\"reasons\":[{\"code\":\"bad_signature\",\"message\":\"signature does not verify\"}]}",
    "{\"approval_role\":\"approver\",\"source\":{\"topic\":\"deployq.requests\",\"partition\":1,"
    "\"offset\":0}}",
    "{\"provider\":\"railway\",\"provider_deployment_id\":\"d-1\",\"attempt\":1}",
    "{\"provider\":\"github-actions\",\"error_class\":\"timeout\",\"detail\":\"no answer in 30 s\"}",
    "{\"provider\":\"railway\",\"provider_deployment_id\":\"d-1\",\"duration_ms\":93000}",
    "{\"reason\":\"build_failed\"}",
    "{\"window_ms\":300000,\"interval_ms\":10000,\"probes\":[\"http:/healthz\"]}",
    "{\"state\":\"degraded\",\"probe\":\"latency_p99\",\"observed\":812,\"threshold\":500}",
    "{\"window_ms\":300000,\"samples\":30}",
    "{\"reason\":\"error rate 9%\",\"requested_by\":\"deployq-monitor\",\"evidence\":{\"probe\":"
    "\"error_rate\",\"kind\":\"threshold\",\"detected_at\":\"2026-11-26T10:03:20Z\"}}",
    "{\"to_version\":\"v1\",\"method\":\"provider_rollback\"}",
    "{\"to_version\":\"v1\",\"method\":\"redeploy\",\"restored_at\":\"2026-11-26T10:05:02Z\"}",
    "{\"reason\":\"provider refused\"}",
    "{\"from_color\":\"blue\",\"to_color\":\"green\",\"router\":\"nginx\"}",
    "{\"channel\":\"slack\",\"attempts\":1}",
    "{\"channel\":\"webhook\",\"attempts\":5,\"error\":\"HTTP 503\"}",
    "{\"decision\":\"approve\",\"key_id\":\"alice\",\"reasons\":[{\"code\":\"approver_is_signer\","
    "\"message\":\"key alice signed the request\"}],\"source\":{\"topic\":\"deployq.requests\","
    "\"partition\":0,\"offset\":13}}",
    "{\"digest\":\"0123456789abcdef\",\"against\":\"staging\",\"missing\":[],\"differs\":[\"STRIPE_KEY\"],"
    "\"allowed\":[\"DATABASE_URL\"],\"since_deploy\":{\"version\":\"v1\",\"recorded_at\":"
    "\"2026-11-26T10:00:00.000Z\",\"changed\":[\"STRIPE_KEY\"]}}",
    "{\"step\":2,\"steps\":4,\"weight\":25,\"canary_color\":\"green\",\"stable_color\":\"blue\","
    "\"canary_version\":\"v2\",\"stable_version\":\"v1\",\"router\":\"edge\",\"kind\":\"analysis\","
    "\"hold_ms\":10000}",
    "{\"step\":1,\"steps\":4,\"weight\":5,\"passed\":false,\"result\":\"fail\",\"reason\":\"error rate\","
    "\"canary\":{\"samples\":20,\"errors\":4,\"error_rate\":0.2,\"p50_ms\":3.5,\"p90_ms\":5,\"p99_ms\":9},"
    "\"stable\":{\"samples\":20,\"errors\":0,\"error_rate\":0,\"p50_ms\":3,\"p90_ms\":4,\"p99_ms\":6},"
    "\"latency\":{\"test\":\"mann-whitney-u\",\"tested\":true,\"u\":210,\"z\":0.4,\"p_value\":0.34,"
    "\"alpha\":0.05,\"median_ratio\":1.17,\"tolerance\":0.1},\"criteria\":{\"error_tolerance\":0.01,"
    "\"max_error_rate\":0.05,\"min_samples\":20},\"first_bad_at\":\"2026-11-26T10:00:01.200Z\"}",
    "{\"steps\":4,\"canary_color\":\"green\",\"stable_color\":\"blue\",\"duration_ms\":61000}",
    "{\"step\":1,\"weight\":5,\"max_weight\":5,\"reason\":\"analysis\",\"detail\":\"error rate 20%\","
    "\"canary_color\":\"green\",\"stable_color\":\"blue\",\"weight_restored\":true,\"first_bad_at\":"
    "\"2026-11-26T10:00:01.200Z\",\"restored_at\":\"2026-11-26T10:00:04.000Z\",\"time_to_zero_ms\":2800}",
};

static cJSON *make_event(const char *type, const char *data)
{
    cJSON *ev = cJSON_Parse("{\"schema\":\"deployq.event/v1\",\"id\":\"0b7f3c2e-5d1a-4e8b-9c3f-2a1d6e7f8a9b\","
                            "\"deployment_id\":\"4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a\","
                            "\"service\":\"api\",\"environment\":\"production\",\"version\":\"3f9c2a1\","
                            "\"at\":\"2026-11-26T10:00:00.123Z\",\"actor\":\"test@host/1\",\"fence\":42}");
    assert_non_null(ev);
    cJSON_AddStringToObject(ev, "type", type);
    cJSON *d = cJSON_Parse(data);
    assert_non_null(d);
    cJSON_AddItemToObject(ev, "data", d);
    return ev;
}

static int load_set(void **state)
{
    char err[512];
    dq_schema_set *set = dq_schema_set_load(schemas_dir(), err, sizeof err);
    if (!set) {
        fprintf(stderr, "dq_schema_set_load(%s): %s\n", schemas_dir(), err);
        return -1;
    }
    *state = set;
    return 0;
}

static int free_set(void **state)
{
    dq_schema_set_free(*state);
    return 0;
}

static void test_real_set_every_type(void **state)
{
    const dq_schema_set *set = *state;
    char err[1024];
    assert_non_null(dq_schema_set_envelope(set));
    assert_non_null(dq_schema_set_request(set));
    assert_non_null(dq_schema_set_signed(set));
    assert_null(dq_schema_set_event(set, "deploy.exploded"));
    for (size_t i = 0; event_types[i]; i++) {
        assert_non_null(dq_schema_set_event(set, event_types[i]));
        cJSON *ev = make_event(event_types[i], good_data[i]);
        int n = dq_schema_validate_event(set, ev, err, sizeof err);
        if (n != 0)
            fail_msg("%s: %s", event_types[i], err);
        cJSON_Delete(ev);
    }
}

static void test_real_set_bad_events(void **state)
{
    const dq_schema_set *set = *state;
    char err[1024];
    cJSON *ev = make_event("deploy.started", "{\"provider\":\"railway\",\"provider_deployment_id\":\"d\","
                                             "\"attempt\":0}");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_string_equal(err, "/data/attempt: below minimum 1");
    cJSON_Delete(ev);

    ev = make_event("deploy.validated", good_data[0]);
    cJSON_AddStringToObject(cJSON_GetObjectItemCaseSensitive(ev, "data"), "extra", "x");
    cJSON_ReplaceItemInObjectCaseSensitive(ev, "fence", cJSON_CreateNumber(-1));
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 2);
    assert_string_equal(err, "/fence: below minimum 0; /data/extra: additional property not allowed");
    cJSON_Delete(ev);

    ev = make_event("deploy.rejected", "{\"reasons\":[{\"code\":\"bad_vibes\",\"message\":\"x\"}]}");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_memory_equal(err, "/data/reasons/0/code: not one of [too_large, too_deep, ",
                        strlen("/data/reasons/0/code: not one of [too_large, too_deep, "));
    cJSON_Delete(ev);

    ev = make_event("deploy.exploded", "{}");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_memory_equal(err, "/type: not one of [deploy.validated, ", strlen("/type: not one of [deploy.validated, "));
    cJSON_Delete(ev);

    ev = make_event("deploy.failed", "{\"reason\":\"timeout\"}");
    cJSON_DeleteItemFromObjectCaseSensitive(ev, "data");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_string_equal(err, "/data: required");
    cJSON_Delete(ev);

    ev = make_event("deploy.failed", "[]");
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_string_equal(err, "/data: expected object, got array");
    cJSON_Delete(ev);

    ev = cJSON_CreateArray();
    assert_int_equal(dq_schema_validate_event(set, ev, err, sizeof err), 1);
    assert_string_equal(err, "/: expected object, got array");
    cJSON_Delete(ev);
}

static void test_real_request_and_signed(void **state)
{
    const dq_schema_set *set = *state;
    char err[1024];
    const char *good = "{\"schema\":\"deployq.request/v1\",\"deployment_id\":\"4f1c9a7e-2b3d-4c5e-8f6a-"
                       "7b8c9d0e1f2a\",\"service\":\"api\",\"environment\":\"production\","
                       "\"version\":\"3f9c2a1\",\"strategy\":\"blue-green\",\"nonce\":\"abcdefghijklmnop\","
                       "\"issued_at\":\"2026-11-26T10:00:00Z\"}";
    cJSON *req = cJSON_Parse(good);
    assert_int_equal(dq_schema_validate(dq_schema_set_request(set), req, err, sizeof err), 0);
    cJSON_DeleteItemFromObjectCaseSensitive(req, "nonce");
    cJSON_ReplaceItemInObjectCaseSensitive(req, "strategy", cJSON_CreateString("linear"));
    assert_int_equal(dq_schema_validate(dq_schema_set_request(set), req, err, sizeof err), 2);
    assert_string_equal(err, "/nonce: required; /strategy: not one of [rolling, blue-green, canary]");
    cJSON_Delete(req);

    char sig[89];
    memset(sig, 'A', 86);
    memcpy(sig + 86, "==", 3);
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "schema", "deployq.signed/v1");
    cJSON_AddStringToObject(s, "key_id", "ci-1");
    cJSON_AddStringToObject(s, "alg", "ed25519");
    cJSON_AddStringToObject(s, "signature", sig);
    cJSON_AddStringToObject(s, "request", good);
    assert_int_equal(dq_schema_validate(dq_schema_set_signed(set), s, err, sizeof err), 0);
    sig[85] = '=';
    cJSON_ReplaceItemInObjectCaseSensitive(s, "signature", cJSON_CreateString(sig + 1));
    assert_int_equal(dq_schema_validate(dq_schema_set_signed(set), s, err, sizeof err), 1);
    assert_string_equal(err, "/signature: does not match ^[A-Za-z0-9+/]{86}==$");
    cJSON_Delete(s);
}

int main(void)
{
    const struct CMUnitTest keyword_tests[] = {
        cmocka_unit_test(test_type),
        cmocka_unit_test(test_required_and_properties),
        cmocka_unit_test(test_additional_properties),
        cmocka_unit_test(test_pointer_escaping),
        cmocka_unit_test(test_enum_and_const),
        cmocka_unit_test(test_pattern),
        cmocka_unit_test(test_pattern_ignores_locale),
        cmocka_unit_test(test_lengths_in_code_points),
        cmocka_unit_test(test_minimum_maximum),
        cmocka_unit_test(test_items),
        cmocka_unit_test(test_boolean_schemas),
        cmocka_unit_test(test_date_time),
        cmocka_unit_test(test_error_bounds),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_null_arguments),
    };
    const struct CMUnitTest file_tests[] = {
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_set_missing_event_schema),
    };
    const struct CMUnitTest set_tests[] = {
        cmocka_unit_test(test_real_set_every_type),
        cmocka_unit_test(test_real_set_bad_events),
        cmocka_unit_test(test_real_request_and_signed),
    };
    int failed = cmocka_run_group_tests_name("schema keywords", keyword_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("schema files", file_tests, make_tmpdir, drop_tmpdir);
    failed += cmocka_run_group_tests_name("schemas/", set_tests, load_set, free_set);
    return failed;
}
