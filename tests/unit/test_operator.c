/*
 * test_operator.c - verifying an operator command (workers/validator/operator.h,
 * dq_operator_check): only a configured, unretired key of role operator whose signature
 * covers the exact command, inside the issued_at window, for a configured target, with a
 * document that matches schemas/operator.json. A CI or approver key, an unknown key, a
 * changed byte, an unsigned or garbled command are each refused with their code.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "operator.h"
#include "sign.h"
#include "util.h"

typedef struct fixture {
    char dir[64];
    dq_signer *op, *ci;
    dq_config *cfg;
    dq_validator val;
} fixture;

static dq_signer *new_key(const char *dir, const char *name, char **pub)
{
    char path[128], err[256];

    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (dq_sign_keygen(path, pub, err, sizeof err) != 0)
        return NULL;
    return dq_signer_load(path, err, sizeof err);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char *op_pub = NULL, *ci_pub = NULL, *old_pub = NULL, json[2048], err[512], path[4096];
    dq_signer *old;
    cJSON *root;
    const char *schemas = getenv("DEPLOYQ_SCHEMAS");

    dq_log_init("test_operator", DQ_LOG_OFF, 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/dq-test-operator.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->op = new_key(f->dir, "op", &op_pub);
    f->ci = new_key(f->dir, "ci", &ci_pub);
    old = new_key(f->dir, "old", &old_pub);
    if (!f->op || !f->ci || !old)
        return -1;
    dq_signer_free(old);
    snprintf(json, sizeof json,
             "{\"keys\":[{\"id\":\"op-1\",\"public_key\":\"%s\",\"role\":\"operator\"},"
             "{\"id\":\"ci-1\",\"public_key\":\"%s\",\"role\":\"ci\"},"
             "{\"id\":\"old\",\"public_key\":\"%s\",\"role\":\"operator\",\"retired\":true}],"
             "\"services\":{\"api\":{\"environments\":{\"prod\":{}}}}}",
             op_pub, ci_pub, old_pub);
    free(op_pub);
    free(ci_pub);
    free(old_pub);
    root = cJSON_Parse(json);
    f->cfg = dq_config_from_json(root, "t.json", err, sizeof err);
    cJSON_Delete(root);
    if (!f->cfg) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    f->val.cfg = f->cfg;
    snprintf(path, sizeof path, "%s/operator.json", schemas ? schemas : "schemas");
    f->val.operator_cmd = dq_schema_load_file(path, err, sizeof err);
    if (!f->val.operator_cmd) {
        fprintf(stderr, "schema: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];

    dq_signer_free(f->op);
    dq_signer_free(f->ci);
    dq_config_free(f->cfg);
    dq_schema_free(f->val.operator_cmd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* The command text of verb for api/prod (or a deployment for cancel and retry), issued now. */
static char *command(const char *verb, const char *service, const char *issued_at)
{
    char now[DQ_TIME_LEN + 1], text[1024];

    if (strcmp(verb, "cancel") == 0 || strcmp(verb, "retry") == 0)
        snprintf(text, sizeof text,
                 "{\"schema\":\"deployq.operator/v1\",\"verb\":\"%s\","
                 "\"deployment_id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\",\"nonce\":\"0123456789abcdef0123\","
                 "\"issued_at\":\"%s\"}",
                 verb, issued_at ? issued_at : dq_time_format(dq_now_ms(), now));
    else
        snprintf(text, sizeof text,
                 "{\"schema\":\"deployq.operator/v1\",\"verb\":\"%s\",\"service\":\"%s\",\"environment\":\"prod\","
                 "\"reason\":\"incident\",\"nonce\":\"0123456789abcdef0123\",\"issued_at\":\"%s\"}",
                 verb, service, issued_at ? issued_at : dq_time_format(dq_now_ms(), now));
    return strdup(text);
}

/* Check message (the wrapper's text) and return the reasons' codes, comma-separated
 * ("" when it passes), in out; *verified says whether a key came back. */
static const char *check(fixture *f, const char *message, char *out, size_t outlen, int *verified)
{
    dq_message m = {.topic = "deployq.requests", .value = message, .len = strlen(message)};
    dq_parsed p;
    dq_verdict v;
    const dq_key *key = NULL;

    memset(&v, 0, sizeof v);
    out[0] = '\0';
    dq_parse_message(&f->val, &m, &p);
    if (!dq_operator_peek(&p)) {
        dq_parsed_clear(&p);
        snprintf(out, outlen, "not-an-operator-command");
        *verified = 0;
        return out;
    }
    dq_operator_check(&f->val, &p, dq_now_ms(), &v, &key);
    for (int i = 0; i < v.n_reasons; i++) {
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, "%s%s", n ? "," : "", v.reasons[i].code);
    }
    *verified = key != NULL;
    dq_verdict_clear(&v);
    dq_parsed_clear(&p);
    return out;
}

static char *signed_by(dq_signer *s, const char *key_id, const char *text)
{
    return dq_sign_envelope(s, key_id, text);
}

static void test_operator_key_passes(void **state)
{
    fixture *f = *state;
    const char *verbs[] = {"pause", "resume", "hold", "release", "cancel", "retry"};
    char codes[512];
    int ok;

    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        char *text = command(verbs[i], "api", NULL), *msg = signed_by(f->op, "op-1", text);

        assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "");
        assert_true(ok);
        free(msg);
        free(text);
    }
}

static void test_refusals(void **state)
{
    fixture *f = *state;
    char codes[512], *text = command("pause", "api", NULL), *msg, *bad;
    int ok;

    /* a CI key, even with a good signature of its own */
    msg = signed_by(f->ci, "ci-1", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "wrong_role");
    assert_false(ok);
    free(msg);
    /* a key nobody configured, a retired one */
    msg = signed_by(f->op, "ghost", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "unsigned");
    free(msg);
    msg = signed_by(f->op, "old", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "unsigned");
    free(msg);
    /* the operator's key id, another key's signature */
    msg = signed_by(f->ci, "op-1", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "bad_signature");
    assert_false(ok);
    free(msg);
    /* one byte changed after signing: the reason */
    msg = signed_by(f->op, "op-1", text);
    bad = strdup(msg);
    strstr(bad, "incident")[0] = 'I';
    assert_string_equal(check(f, bad, codes, sizeof codes, &ok), "bad_signature");
    free(bad);
    free(msg);
    free(text);
    /* no signature at all */
    text = command("hold", "api", NULL);
    {
        cJSON *w = cJSON_CreateObject();
        char *unsigned_msg;

        cJSON_AddStringToObject(w, "schema", "deployq.signed/v1");
        cJSON_AddStringToObject(w, "request", text);
        unsigned_msg = cJSON_PrintUnformatted(w);
        assert_string_equal(check(f, unsigned_msg, codes, sizeof codes, &ok), "unsigned");
        free(unsigned_msg);
        cJSON_Delete(w);
    }
    free(text);
    /* an old command, and an unknown target */
    text = command("pause", "api", "2020-01-01T00:00:00.000Z");
    msg = signed_by(f->op, "op-1", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "stale");
    free(msg);
    free(text);
    text = command("pause", "nope", NULL);
    msg = signed_by(f->op, "op-1", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "unknown_target");
    free(msg);
    free(text);
    /* a retry names a deployment, as a cancel does */
    text = strdup("{\"schema\":\"deployq.operator/v1\",\"verb\":\"retry\",\"service\":\"api\","
                  "\"environment\":\"prod\",\"nonce\":\"0123456789abcdef0123\","
                  "\"issued_at\":\"2099-01-01T00:00:00.000Z\"}");
    msg = signed_by(f->op, "op-1", text);
    assert_string_equal(check(f, msg, codes, sizeof codes, &ok), "schema,future");
    free(msg);
    free(text);
    /* garbled: not an operator command at all (the request path rejects it) */
    assert_string_equal(check(f, "{\"schema\":\"deployq.signed/v1\",\"request\":\"{garbled", codes, sizeof codes, &ok),
                        "not-an-operator-command");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operator_key_passes),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
