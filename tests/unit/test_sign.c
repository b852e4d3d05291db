/*
 * test_sign.c - sign.h: keygen writes a 0600 PEM and never overwrites, signatures verify
 * and fail for one flipped byte or a wrong key, malformed base64 is -1, PEM loading from a
 * file and from memory (the same key from every PEM form), and the signed envelope carries
 * the request text verbatim.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "sign.h"
#include "testutil.h"
#include "util.h"

typedef struct {
    char dir[64];
    char key[128];
    char *pub;
    dq_signer *signer;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256] = "";
    assert_non_null(f);
    assert_int_equal(dq_test_tmpdir(f->dir, sizeof f->dir), 0);
    snprintf(f->key, sizeof f->key, "%s/ci.pem", f->dir);
    assert_int_equal(dq_sign_keygen(f->key, &f->pub, err, sizeof err), 0);
    f->signer = dq_signer_load(f->key, err, sizeof err);
    assert_non_null(f->signer);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    dq_signer_free(f->signer);
    free(f->pub);
    dq_test_rm_rf(f->dir);
    free(f);
    return 0;
}

static void test_keygen_file_and_public_key(void **state)
{
    fixture *f = *state;
    struct stat st;
    assert_int_equal(stat(f->key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    char *pem = dq_read_file(f->key, 4096, NULL);
    assert_non_null(pem);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    free(pem);

    unsigned char raw[64];
    assert_int_equal(strlen(f->pub), 44);
    assert_int_equal(dq_base64_decode(f->pub, raw, sizeof raw), DQ_ED25519_PUB_LEN);
    char *again = dq_signer_public_b64(f->signer);
    assert_string_equal(again, f->pub);
    free(again);
}

static void test_keygen_refuses_overwrite(void **state)
{
    fixture *f = *state;
    char *before = dq_read_file(f->key, 4096, NULL);
    char *pub = (char *)"untouched";
    char err[256] = "";
    assert_int_equal(dq_sign_keygen(f->key, &pub, err, sizeof err), -1);
    assert_null(pub);
    assert_non_null(strstr(err, "file exists"));
    char *after = dq_read_file(f->key, 4096, NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_sign_verify_round_trip(void **state)
{
    fixture *f = *state;
    const char *msg = "{\"schema\":\"deployq.request/v1\",\"service\":\"api\"}";
    char err[256] = "";
    char *sig = dq_sign(f->signer, msg, strlen(msg));
    assert_non_null(sig);
    assert_int_equal(strlen(sig), 88);
    assert_int_equal(dq_verify(f->pub, msg, strlen(msg), sig, err, sizeof err), 1);

    /* Ed25519 is deterministic: the same message gives the same signature. */
    char *sig2 = dq_sign(f->signer, msg, strlen(msg));
    assert_string_equal(sig, sig2);
    free(sig2);
    free(sig);

    sig = dq_sign(f->signer, "", 0);
    assert_int_equal(dq_verify(f->pub, "", 0, sig, err, sizeof err), 1);
    free(sig);
}

static void test_flipped_byte_fails(void **state)
{
    fixture *f = *state;
    char msg[] = "{\"service\":\"api\",\"version\":\"abc123\"}";
    char err[256] = "";
    char *sig = dq_sign(f->signer, msg, strlen(msg));
    for (size_t i = 0; i < strlen(msg); i++) {
        msg[i] ^= 0x01;
        assert_int_equal(dq_verify(f->pub, msg, strlen(msg), sig, err, sizeof err), 0);
        msg[i] ^= 0x01;
    }
    assert_int_equal(dq_verify(f->pub, msg, strlen(msg), sig, err, sizeof err), 1);

    /* A flipped bit in the signature fails as well. */
    unsigned char raw[DQ_ED25519_SIG_LEN];
    assert_int_equal(dq_base64_decode(sig, raw, sizeof raw), DQ_ED25519_SIG_LEN);
    raw[10] ^= 0x80;
    char *bad = dq_base64_encode(raw, sizeof raw);
    assert_int_equal(dq_verify(f->pub, msg, strlen(msg), bad, err, sizeof err), 0);
    free(bad);
    free(sig);
}

static void test_wrong_key_fails(void **state)
{
    fixture *f = *state;
    char path[160], err[256] = "";
    char *other_pub = NULL;
    snprintf(path, sizeof path, "%s/other.pem", f->dir);
    assert_int_equal(dq_sign_keygen(path, &other_pub, err, sizeof err), 0);
    assert_string_not_equal(other_pub, f->pub);

    const char *msg = "deploy api";
    char *sig = dq_sign(f->signer, msg, strlen(msg));
    assert_int_equal(dq_verify(other_pub, msg, strlen(msg), sig, err, sizeof err), 0);
    free(sig);
    free(other_pub);
}

static void test_malformed_inputs(void **state)
{
    fixture *f = *state;
    const char *msg = "deploy api";
    char err[256];
    char *sig = dq_sign(f->signer, msg, strlen(msg));

    err[0] = '\0';
    assert_int_equal(dq_verify(f->pub, msg, strlen(msg), "not base64!", err, sizeof err), -1);
    assert_string_equal(err, "signature is not base64 of 64 bytes");
    assert_int_equal(dq_verify(f->pub, msg, strlen(msg), "AAAA", err, sizeof err), -1);
    assert_int_equal(dq_verify("%%%%", msg, strlen(msg), sig, err, sizeof err), -1);
    assert_string_equal(err, "public key is not base64 of 32 bytes");
    assert_int_equal(dq_verify("AAAA", msg, strlen(msg), sig, err, sizeof err), -1);
    assert_int_equal(dq_verify(NULL, msg, strlen(msg), sig, err, sizeof err), -1);
    assert_int_equal(dq_verify(f->pub, msg, strlen(msg), NULL, err, sizeof err), -1);
    free(sig);
}

static void test_load_errors_name_no_key(void **state)
{
    fixture *f = *state;
    char path[160], err[256] = "";
    snprintf(path, sizeof path, "%s/missing.pem", f->dir);
    assert_null(dq_signer_load(path, err, sizeof err));
    assert_non_null(strstr(err, "missing.pem"));

    const char *junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_null(dq_signer_from_pem(junk, strlen(junk), err, sizeof err));
    assert_string_equal(err, "not a readable PEM private key");

    /* The same key from memory signs exactly like the one from the file. */
    size_t len;
    char *pem = dq_read_file(f->key, 4096, &len);
    dq_signer *mem = dq_signer_from_pem(pem, len, err, sizeof err);
    assert_non_null(mem);
    char *a = dq_sign(mem, "x", 1), *b = dq_sign(f->signer, "x", 1);
    assert_string_equal(a, b);
    free(a);
    free(b);
    dq_signer_free(mem);
    free(pem);
    dq_signer_free(NULL);
}

/* One known Ed25519 key (seed 01..20) in the forms a key file comes in: as keygen and
 * `openssl genpkey` write it (read without OpenSSL's decoder framework), with CRLF line
 * ends and with text before the PEM (read by the decoder). Each form must give the same key:
 * the public key and the signature of "x" are what `openssl pkey -pubout` and `openssl
 * pkeyutl -sign -rawin` printed for this key. An X25519 key with the same layout is refused. */
static void test_pem_forms_read_alike(void **state)
{
    static const char *const forms[] = {
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n"
        "-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\r\n"
        "MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\r\n"
        "-----END PRIVATE KEY-----\r\n",
        "the CI key\n"
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n"
        "-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n"
        "-----END PRIVATE KEY-----", /* no final line end */
    };
    static const char x25519[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VuBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n"
        "-----END PRIVATE KEY-----\n";
    char err[256] = "";

    (void)state;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        dq_signer *s = dq_signer_from_pem(forms[i], strlen(forms[i]), err, sizeof err);
        char *pub, *sig;

        assert_non_null(s);
        pub = dq_signer_public_b64(s);
        sig = dq_sign(s, "x", 1);
        assert_string_equal(pub, "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=");
        assert_string_equal(sig, "/K6OkXW+CzEnPV3s0tvRjWV3hWdRjQyR+htkZPG7NeckoFfC+ny3GBS191fLE8J/"
                                 "pseEyuM2HQyGwyLZS4UzBw==");
        free(sig);
        free(pub);
        dq_signer_free(s);
    }
    assert_null(dq_signer_from_pem(x25519, strlen(x25519), err, sizeof err));
    assert_string_equal(err, "private key is not an Ed25519 key");
}

static void test_envelope(void **state)
{
    fixture *f = *state;
    const char *request =
        "{\"schema\":\"deployq.request/v1\",\"service\":\"api\",\"note\":\"a\\\"b\"}";
    char *env = dq_sign_envelope(f->signer, "ci-1", request);
    assert_non_null(env);

    char err[256] = "";
    cJSON *obj = dq_json_parse(env, strlen(env), DQ_JSON_MAX_BYTES_DEFAULT,
                               DQ_JSON_MAX_DEPTH_DEFAULT, NULL, err, sizeof err);
    assert_non_null(obj);
    assert_string_equal(dq_json_str(obj, "schema"), "deployq.signed/v1");
    assert_string_equal(dq_json_str(obj, "key_id"), "ci-1");
    assert_string_equal(dq_json_str(obj, "alg"), "ed25519");
    assert_string_equal(dq_json_str(obj, "request"), request);
    const char *sig = dq_json_str(obj, "signature");
    assert_non_null(sig);
    assert_int_equal(dq_verify(f->pub, request, strlen(request), sig, err, sizeof err), 1);
    static const char head[] = "{\"schema\":\"deployq.signed/v1\",\"key_id\":\"ci-1\","
                               "\"alg\":\"ed25519\",\"signature\":\"";
    assert_memory_equal(env, head, sizeof head - 1);
    cJSON_Delete(obj);
    free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keygen_file_and_public_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keygen_refuses_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_verify_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors_name_no_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_envelope, setup, teardown),
        cmocka_unit_test(test_pem_forms_read_alike),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
