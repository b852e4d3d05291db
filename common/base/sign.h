/*
 * sign.h - Ed25519 request signing through OpenSSL 3.
 *
 * A key pair is a private key in a PEM file (PKCS#8, written mode 0600) and a public key
 * as base64 of its 32 raw bytes, which is what the configuration lists under keys:.
 * The signature covers exactly the bytes given: the signer signs the request text, the
 * verifier verifies the same text as it arrived, nothing is re-serialised in between.
 * Private key material never leaves these functions: not in errors, not in logs.
 */
#ifndef DQ_SIGN_H
#define DQ_SIGN_H

#include <stddef.h>

typedef struct dq_signer dq_signer;

#define DQ_ED25519_SIG_LEN 64
#define DQ_ED25519_PUB_LEN 32

/* Generate a key pair: write the private key PEM to priv_path (created 0600, refuses to
 * overwrite an existing file) and return the public key as malloc'd base64 in *pub_b64.
 * 0 ok, -1 with a reason in err. */
int dq_sign_keygen(const char *priv_path, char **pub_b64, char *err, size_t errlen);

/* Load a private key PEM file. NULL with a reason (never key bytes) in err. */
dq_signer *dq_signer_load(const char *priv_path, char *err, size_t errlen);
/* Load from PEM text in memory (e.g. an env variable holding the key). */
dq_signer *dq_signer_from_pem(const char *pem, size_t len, char *err, size_t errlen);
void dq_signer_free(dq_signer *s);
/* The public key of this signer as malloc'd base64. */
char *dq_signer_public_b64(const dq_signer *s);

/* Sign msg[len]; returns the malloc'd base64 signature or NULL. */
char *dq_sign(const dq_signer *s, const void *msg, size_t len);

/* Verify a base64 signature of msg[len] with a base64 public key.
 * Returns 1 valid, 0 invalid signature, -1 malformed key or signature (reason in err). */
int dq_verify(const char *pub_b64, const void *msg, size_t len, const char *sig_b64, char *err,
              size_t errlen);

/* Wrap a request text into the signed envelope of event.h. malloc'd JSON. */
char *dq_sign_envelope(const dq_signer *s, const char *key_id, const char *request_text);

#endif
