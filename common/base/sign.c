/*
 * sign.c - Ed25519 keys, signatures and the signed request envelope (see sign.h).
 *
 * All cryptography is OpenSSL 3's EVP interface; Ed25519 signs the message itself (no
 * digest is chosen, hence the NULL md). Error strings name files and what went wrong,
 * never key bytes, and buffers that held a private key are cleansed before being freed.
 */
#include "sign.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event.h"
#include "util.h"

#define PEM_MAX_BYTES (16 * 1024)

struct dq_signer {
    EVP_PKEY *pkey;
};

static void set_err(char *err, size_t errlen, const char *msg, const char *detail)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s%s%s", msg, detail != NULL ? ": " : "",
                 detail != NULL ? detail : "");
}

static char *public_b64(EVP_PKEY *pkey)
{
    unsigned char raw[DQ_ED25519_PUB_LEN];
    size_t len = sizeof raw;
    if (EVP_PKEY_get_raw_public_key(pkey, raw, &len) != 1 || len != sizeof raw)
        return NULL;
    return dq_base64_encode(raw, len);
}

int dq_sign_keygen(const char *priv_path, char **pub_b64, char *err, size_t errlen)
{
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    FILE *fp = NULL;
    int created = 0, rc = -1;

    *pub_b64 = NULL;
    ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &pkey) != 1) {
        set_err(err, errlen, "Ed25519 key generation failed", NULL);
        goto done;
    }
    /* O_EXCL: an existing key is never overwritten; 0600 from the first byte on. */
    int fd = open(priv_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "cannot create %s: %s", priv_path,
                     errno == EEXIST ? "file exists, not overwriting a key" : strerror(errno));
        goto done;
    }
    created = 1;
    fp = fdopen(fd, "w");
    if (fp == NULL) {
        close(fd);
        set_err(err, errlen, "cannot write private key", strerror(errno));
        goto done;
    }
    int written = PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL) == 1;
    int closed = fclose(fp) == 0;
    fp = NULL;
    if (!written || !closed) {
        set_err(err, errlen, "cannot write private key", priv_path);
        goto done;
    }
    *pub_b64 = public_b64(pkey);
    if (*pub_b64 == NULL) {
        set_err(err, errlen, "cannot export the public key", NULL);
        goto done;
    }
    rc = 0;

done:
    if (rc != 0 && created)
        unlink(priv_path);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

/* An Ed25519 private key in PKCS#8 (RFC 8410) is this DER prefix and the 32-byte seed. */
static const unsigned char ed25519_pkcs8_prefix[] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30,
                                                     0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
                                                     0x04, 0x22, 0x04, 0x20};
#define ED25519_PKCS8_LEN (sizeof ed25519_pkcs8_prefix + 32)
#define ED25519_PKCS8_B64_LEN 64 /* 48 bytes of DER, one base64 line, no padding */

/* The key when pem is exactly what `deployq keygen` and `openssl genpkey -algorithm
 * ed25519` write (an unencrypted PKCS#8 Ed25519 key, one base64 line, "\n" line ends),
 * else NULL and the caller asks OpenSSL's generic decoder, which reads every other form.
 * This path exists for speed: the decoder framework's set-up costs about a millisecond
 * of every `deployq submit` (docs/performance.md). */
static EVP_PKEY *ed25519_pkcs8_read(const char *pem, size_t len)
{
    static const char begin[] = "-----BEGIN PRIVATE KEY-----\n";
    static const char end[] = "\n-----END PRIVATE KEY-----";
    const size_t begin_len = sizeof begin - 1, end_len = sizeof end - 1;
    unsigned char der[ED25519_PKCS8_LEN + 2]; /* EVP_DecodeBlock writes whole triplets */
    char b64[ED25519_PKCS8_B64_LEN + 1];
    EVP_PKEY *pkey = NULL;
    size_t i = begin_len + ED25519_PKCS8_B64_LEN + end_len;

    if (len < i || memcmp(pem, begin, begin_len) != 0 ||
        memcmp(pem + begin_len + ED25519_PKCS8_B64_LEN, end, end_len) != 0)
        return NULL;
    for (; i < len; i++) /* nothing but line ends after the END line */
        if (pem[i] != '\n')
            return NULL;
    memcpy(b64, pem + begin_len, ED25519_PKCS8_B64_LEN);
    b64[ED25519_PKCS8_B64_LEN] = '\0';
    if (strspn(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") ==
            ED25519_PKCS8_B64_LEN &&
        EVP_DecodeBlock(der, (const unsigned char *)b64, ED25519_PKCS8_B64_LEN) ==
            (int)ED25519_PKCS8_LEN &&
        memcmp(der, ed25519_pkcs8_prefix, sizeof ed25519_pkcs8_prefix) == 0)
        pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL,
                                            der + sizeof ed25519_pkcs8_prefix, 32);
    OPENSSL_cleanse(der, sizeof der);
    OPENSSL_cleanse(b64, sizeof b64);
    return pkey;
}

dq_signer *dq_signer_from_pem(const char *pem, size_t len, char *err, size_t errlen)
{
    dq_signer *s = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;

    if (pem == NULL || len > PEM_MAX_BYTES) {
        set_err(err, errlen, "private key PEM missing or too large", NULL);
        goto fail;
    }
    pkey = ed25519_pkcs8_read(pem, len);
    if (pkey == NULL) {
        bio = BIO_new_mem_buf(pem, (int)len);
        /* An empty passphrase, so an encrypted key fails here instead of prompting a tty. */
        pkey = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
    }
    if (pkey == NULL) {
        set_err(err, errlen, "not a readable PEM private key", NULL);
        goto fail;
    }
    if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519) {
        set_err(err, errlen, "private key is not an Ed25519 key", NULL);
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        set_err(err, errlen, "out of memory", NULL);
        goto fail;
    }
    s->pkey = pkey;
    BIO_free(bio);
    return s;

fail:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    ERR_clear_error();
    return NULL;
}

dq_signer *dq_signer_load(const char *priv_path, char *err, size_t errlen)
{
    size_t len;
    char *pem = dq_read_file(priv_path, PEM_MAX_BYTES, &len);
    if (pem == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "cannot read %s: %s", priv_path, strerror(errno));
        return NULL;
    }
    dq_signer *s = dq_signer_from_pem(pem, len, err, errlen);
    if (s == NULL && err != NULL && errlen > 0) {
        char reason[128];
        dq_strlcpy(reason, err, sizeof reason);
        snprintf(err, errlen, "%s: %s", priv_path, reason);
    }
    OPENSSL_cleanse(pem, len);
    free(pem);
    return s;
}

void dq_signer_free(dq_signer *s)
{
    if (s == NULL)
        return;
    EVP_PKEY_free(s->pkey);
    free(s);
}

char *dq_signer_public_b64(const dq_signer *s)
{
    return s != NULL ? public_b64(s->pkey) : NULL;
}

char *dq_sign(const dq_signer *s, const void *msg, size_t len)
{
    unsigned char sig[DQ_ED25519_SIG_LEN];
    size_t siglen = sizeof sig;
    char *out = NULL;

    if (s == NULL || (msg == NULL && len > 0))
        return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->pkey) == 1 &&
        EVP_DigestSign(ctx, sig, &siglen, msg, len) == 1 && siglen == sizeof sig)
        out = dq_base64_encode(sig, siglen);
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return out;
}

int dq_verify(const char *pub_b64, const void *msg, size_t len, const char *sig_b64, char *err,
              size_t errlen)
{
    unsigned char pub[DQ_ED25519_PUB_LEN], sig[DQ_ED25519_SIG_LEN];
    EVP_PKEY *pkey = NULL;
    EVP_MD_CTX *ctx = NULL;
    int rc = -1;

    if (dq_base64_decode(pub_b64, pub, sizeof pub) != (long)sizeof pub) {
        set_err(err, errlen, "public key is not base64 of 32 bytes", NULL);
        goto done;
    }
    if (dq_base64_decode(sig_b64, sig, sizeof sig) != (long)sizeof sig) {
        set_err(err, errlen, "signature is not base64 of 64 bytes", NULL);
        goto done;
    }
    if (msg == NULL && len > 0) {
        set_err(err, errlen, "no message to verify", NULL);
        goto done;
    }
    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, sizeof pub);
    if (pkey == NULL) {
        set_err(err, errlen, "public key is not a valid Ed25519 key", NULL);
        goto done;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) != 1) {
        set_err(err, errlen, "cannot set up verification", NULL);
        goto done;
    }
    int v = EVP_DigestVerify(ctx, sig, sizeof sig, msg, len);
    if (v == 1 || v == 0)
        rc = v;
    else
        set_err(err, errlen, "verification error", NULL);

done:
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

char *dq_sign_envelope(const dq_signer *s, const char *key_id, const char *request_text)
{
    char *out = NULL;

    if (s == NULL || key_id == NULL || request_text == NULL)
        return NULL;
    char *sig = dq_sign(s, request_text, strlen(request_text));
    cJSON *obj = cJSON_CreateObject();
    if (sig == NULL || obj == NULL)
        goto done;
    if (cJSON_AddStringToObject(obj, "schema", DQ_SIGNED_SCHEMA) == NULL ||
        cJSON_AddStringToObject(obj, "key_id", key_id) == NULL ||
        cJSON_AddStringToObject(obj, "alg", "ed25519") == NULL ||
        cJSON_AddStringToObject(obj, "signature", sig) == NULL ||
        cJSON_AddStringToObject(obj, "request", request_text) == NULL)
        goto done;
    out = cJSON_PrintUnformatted(obj);

done:
    cJSON_Delete(obj);
    free(sig);
    return out;
}
