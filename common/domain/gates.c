/*
 * gates.c - reading an environment's gate keys, the freeze test, and reading a target's
 * variables (a local command run by the process runner, proc.h, or Railway's `variables`
 * query) for the drift gate: names, and values turned into keyed hashes where they are
 * read. See gates.h.
 */
#include "gates.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#define DRIFT_OUTPUT_MAX (256 * 1024)
#define DRIFT_STDERR_MAX 1024
#define MAX_NAMES 4096

static void free_list(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void dq_gates_names_free(char **names, size_t n)
{
    free_list(names, n);
}

void dq_gates_free(dq_gates *g)
{
    if (!g)
        return;
    free(g->target);
    free(g->service);
    free_list(g->required_vars, g->n_required);
    free_list(g->drift_ignore, g->n_ignore);
    free_list(g->drift_allow, g->n_allow);
    if (g->drift_check)
        for (size_t i = 0; g->drift_check[i]; i++)
            free(g->drift_check[i]);
    free(g->drift_check);
    cJSON_Delete(g->railway);
    for (size_t i = 0; i < g->n_freeze; i++)
        free(g->freeze[i].reason);
    free(g->freeze);
    free(g);
}

typedef struct reader {
    const dq_config *cfg;
    const cJSON *env; /* the environment's mapping in the configuration's view */
    char prefix[300]; /* services.<svc>.environments.<env> */
    char *err;
    size_t errlen;
} reader;

static int fail_key(reader *rd, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail_key(reader *rd, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(rd->env, key);
    int line = dq_config_line(rd->cfg, n ? n : rd->env);
    const char *file = rd->cfg->path ? rd->cfg->path : "(config)";

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(rd->err, rd->errlen, "%s:%d: %s.%s: %s", file, line, rd->prefix, key, msg);
    else
        snprintf(rd->err, rd->errlen, "%s: %s.%s: %s", file, rd->prefix, key, msg);
    return -1;
}

/* A list of names (strings) into *out. */
static int read_names(reader *rd, const cJSON *envj, const char *key, char ***out, size_t *n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(envj, key), *it;
    size_t i = 0;

    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        return fail_key(rd, key, "must be a list of variable names");
    *out = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof **out);
    if (!*out)
        return fail_key(rd, key, "out of memory");
    cJSON_ArrayForEach(it, arr)
    {
        const char *s = cJSON_GetStringValue(it);

        if (!s || !s[0] || strchr(s, '=') || strpbrk(s, " \t\r\n"))
            return fail_key(rd, key, "entry %zu is not a variable name", i + 1);
        (*out)[i] = strdup(s);
        if (!(*out)[i])
            return fail_key(rd, key, "out of memory");
        *n = ++i;
    }
    return 0;
}

static int64_t read_duration(reader *rd, const cJSON *envj, const char *key, int64_t fallback,
                             int *bad)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(envj, key);
    char buf[64];
    int64_t ms;

    if (!j || cJSON_IsNull(j))
        return fallback;
    if (cJSON_IsNumber(j))
        snprintf(buf, sizeof buf, "%lld", (long long)j->valuedouble);
    else if (cJSON_IsString(j))
        dq_strlcpy(buf, j->valuestring, sizeof buf);
    else
        buf[0] = '\0';
    ms = dq_duration_parse(buf);
    if (ms <= 0) {
        fail_key(rd, key, "must be a duration such as 30s, 5m, 24h");
        *bad = 1;
    }
    return ms;
}

static int read_freeze(reader *rd, const cJSON *envj, dq_gates *g)
{
    static const char *const known[] = {"from", "until", "reason", NULL};
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(envj, "freeze"), *it;
    size_t i = 0;
    char what[400];

    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        return fail_key(rd, "freeze", "must be a list of {from, until, reason}");
    g->freeze = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *g->freeze);
    if (!g->freeze)
        return fail_key(rd, "freeze", "out of memory");
    cJSON_ArrayForEach(it, arr)
    {
        const char *from = dq_json_str(it, "from"), *until = dq_json_str(it, "until");
        const char *reason = dq_json_str(it, "reason");
        dq_freeze_window *w = &g->freeze[i];

        if (!cJSON_IsObject(it))
            return fail_key(rd, "freeze", "entry %zu must be a mapping {from, until, reason}", i + 1);
        snprintf(what, sizeof what, "%s.freeze: entry %zu", rd->prefix, i + 1);
        if (dq_config_check_keys(rd->cfg, it, known, what, rd->err, rd->errlen) != 0)
            return -1;
        if (!from || dq_time_parse(from, &w->from_ms) != 0)
            return fail_key(rd, "freeze", "entry %zu: from must be an RFC 3339 time", i + 1);
        if (!until || dq_time_parse(until, &w->until_ms) != 0)
            return fail_key(rd, "freeze", "entry %zu: until must be an RFC 3339 time", i + 1);
        if (w->until_ms <= w->from_ms)
            return fail_key(rd, "freeze", "entry %zu: until must be after from", i + 1);
        w->reason = strdup(reason && reason[0] ? reason : "change freeze");
        if (!w->reason)
            return fail_key(rd, "freeze", "out of memory");
        g->n_freeze = ++i;
    }
    return 0;
}

/* The config of a provider entry: inline (a mapping) or the name of a top-level
 * `providers` entry (a mapping name -> config, or a list of configs with `name`). */
static cJSON *provider_entry(const dq_config *cfg, const cJSON *entry)
{
    const char *name = cJSON_GetStringValue(entry);
    const cJSON *all;
    cJSON *found = NULL, *it;

    if (cJSON_IsObject(entry))
        return cJSON_Duplicate(entry, 1);
    if (!name || !(all = dq_config_view(cfg, "providers")))
        return NULL;
    if (cJSON_IsObject(all)) {
        it = cJSON_GetObjectItemCaseSensitive(all, name);
        if (cJSON_IsObject(it)) {
            found = cJSON_Duplicate(it, 1);
            if (found && !cJSON_GetObjectItemCaseSensitive(found, "name"))
                cJSON_AddStringToObject(found, "name", name);
        }
    } else if (cJSON_IsArray(all)) {
        cJSON_ArrayForEach(it, all)
        {
            const char *n = dq_json_str(it, "name");

            if (n && strcmp(n, name) == 0) {
                found = cJSON_Duplicate(it, 1);
                break;
            }
        }
    }
    return found;
}

static int read_railway(reader *rd, const cJSON *envj, dq_gates *g)
{
    const char *want = dq_json_str(envj, "drift_provider");
    const cJSON *chain = cJSON_GetObjectItemCaseSensitive(envj, "providers"), *it;

    if (!cJSON_IsArray(chain)) {
        if (want)
            return fail_key(rd, "drift_provider", "'%s' is not in this environment's providers", want);
        return 0;
    }
    cJSON_ArrayForEach(it, chain)
    {
        cJSON *p = provider_entry(rd->cfg, it);
        const char *type = dq_json_str(p, "type");
        const char *name = dq_json_str(p, "name");

        if (!name)
            name = cJSON_GetStringValue(it) ? cJSON_GetStringValue(it) : type;
        if (p && type && strcmp(type, "railway") == 0 && (!want || (name && strcmp(name, want) == 0))) {
            g->railway = p;
            break;
        }
        cJSON_Delete(p);
    }
    if (want && !g->railway)
        return fail_key(rd, "drift_provider", "no railway provider named '%s' in this environment's providers",
                        want);
    if (g->railway && !dq_json_str(g->railway, "project_id") && g->n_required > 0)
        return fail_key(rd, want ? "drift_provider" : "providers",
                        "the railway provider needs project_id to read variables (required_vars)");
    return 0;
}

dq_gates *dq_gates_load(const dq_config *cfg, const char *service, const char *env, char *err,
                        size_t errlen)
{
    reader rd = {.cfg = cfg, .err = err, .errlen = errlen};
    const dq_environment *e = dq_config_environment(cfg, service, env);
    dq_gates *g = calloc(1, sizeof *g);
    const cJSON *envj;
    const cJSON *dc, *it, *pn;
    char target[256];
    int bad = 0;

    if (errlen > 0)
        err[0] = '\0';
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!e) {
        snprintf(err, errlen, "%s: service '%s' has no environment '%s'",
                 cfg->path ? cfg->path : "(config)", service, env);
        goto fail;
    }
    snprintf(target, sizeof target, "%s/%s", service, env);
    g->target = strdup(target);
    g->service = strdup(service);
    g->drift_timeout_ms = 30000;
    g->approval_timeout_ms = 24LL * 3600 * 1000;
    rd.env = envj = e->view;
    snprintf(rd.prefix, sizeof rd.prefix, "services.%s.environments.%s", service, env);
    if (!g->target || !g->service)
        goto fail;
    if (!cJSON_IsObject(envj))
        return g; /* an empty environment: no gates */
    if (read_names(&rd, envj, "required_vars", &g->required_vars, &g->n_required) != 0 ||
        read_names(&rd, envj, "drift_ignore", &g->drift_ignore, &g->n_ignore) != 0 ||
        read_names(&rd, envj, "drift_allow", &g->drift_allow, &g->n_allow) != 0 ||
        read_freeze(&rd, envj, g) != 0)
        goto fail;
    dc = cJSON_GetObjectItemCaseSensitive(envj, "drift_check");
    if (dc && !cJSON_IsNull(dc)) {
        size_t i = 0;

        if (!cJSON_IsArray(dc) || cJSON_GetArraySize(dc) == 0) {
            fail_key(&rd, "drift_check", "must be a non-empty list: the program and its arguments");
            goto fail;
        }
        g->drift_check = calloc((size_t)cJSON_GetArraySize(dc) + 1, sizeof *g->drift_check);
        if (!g->drift_check)
            goto fail;
        cJSON_ArrayForEach(it, dc)
        {
            char num[64];
            const char *s = cJSON_GetStringValue(it);

            if (!s && cJSON_IsNumber(it)) {
                snprintf(num, sizeof num, "%lld", (long long)it->valuedouble);
                s = num;
            }
            if (!s) {
                fail_key(&rd, "drift_check", "argument %zu is not a string", i + 1);
                goto fail;
            }
            if (!(g->drift_check[i++] = strdup(s)))
                goto fail;
        }
    }
    g->drift_timeout_ms = read_duration(&rd, envj, "drift_timeout", g->drift_timeout_ms, &bad);
    g->approval_timeout_ms = read_duration(&rd, envj, "approval_timeout", g->approval_timeout_ms, &bad);
    if (bad)
        goto fail;
    pn = cJSON_GetObjectItemCaseSensitive(envj, "promotion_needs");
    if (pn) {
        const char *s = cJSON_GetStringValue(pn);

        if (!s || (strcmp(s, "verified") != 0 && strcmp(s, "succeeded") != 0)) {
            fail_key(&rd, "promotion_needs", "must be 'verified' or 'succeeded'");
            goto fail;
        }
        g->needs_succeeded = strcmp(s, "succeeded") == 0;
    }
    if (read_railway(&rd, envj, g) != 0)
        goto fail;
    if (g->n_required > 0 && !dq_gates_can_read_vars(g)) {
        fail_key(&rd, "required_vars",
                 "nothing can read the variables: add drift_check or a railway provider with project_id");
        goto fail;
    }
    return g;
fail:
    if (err[0] == '\0')
        snprintf(err, errlen, "out of memory");
    dq_gates_free(g);
    return NULL;
}

int dq_gates_promotion_unverifiable(const dq_config *cfg, const char *service, const char *env,
                                    char *msg, size_t msglen)
{
    const dq_environment *e = dq_config_environment(cfg, service, env);
    const cJSON *req, *pn;
    const char *needs;
    char where[512];

    if (!e || !e->requires || !dq_config_environment(cfg, service, e->requires))
        return 0;
    pn = dq_json_get(e->view, "promotion_needs");
    needs = cJSON_GetStringValue(pn);
    if (needs && strcmp(needs, "verified") != 0)
        return 0; /* succeeded: the executor's outcome is enough */
    if (dq_config_env_watched(cfg, service, e->requires))
        return 0;
    req = dq_json_get(e->view, "requires");
    snprintf(msg, msglen,
             "%sservices.%s.environments.%s.requires: %s: %s has no monitor, so nothing ever "
             "emits deploy.verified there and %s can never be promoted; add a monitor with "
             "probes to services.%s.environments.%s (docs/configuration.md, Probes and "
             "monitoring) or set promotion_needs: succeeded on %s",
             dq_config_where(cfg, req, where, sizeof where), service, env, e->requires,
             e->requires, env, service, e->requires, env);
    return 1;
}

const dq_freeze_window *dq_gates_frozen(const dq_gates *g, int64_t now_ms)
{
    for (size_t i = 0; g && i < g->n_freeze; i++)
        if (now_ms >= g->freeze[i].from_ms && now_ms < g->freeze[i].until_ms)
            return &g->freeze[i];
    return NULL;
}

int dq_gates_can_read_vars(const dq_gates *g)
{
    return g && (g->drift_check || (g->railway && dq_json_str(g->railway, "project_id")));
}

/* ---- keys and hashes ---- */

static void key_id(dq_drift_key *k)
{
    char h[DQ_DRIFT_HASH_HEX + 1];

    if (dq_drift_hash(k, "", "key id", "", 0, h) != 0)
        h[0] = '\0';
    dq_strlcpy(k->id, h, sizeof k->id);
}

void dq_drift_key_random(dq_drift_key *k)
{
    memset(k, 0, sizeof *k);
    k->len = 32;
    if (RAND_bytes(k->k, (int)k->len) != 1)
        (void)dq_random_bytes(k->k, k->len);
    key_id(k);
}

void dq_drift_settings_clear(dq_drift_settings *s)
{
    if (s)
        OPENSSL_cleanse(s, sizeof *s);
}

int dq_drift_settings_load(const dq_config *cfg, dq_drift_settings *s, char *err, size_t errlen)
{
    static const char *const known[] = {"key", "scan_interval", NULL};
    const cJSON *sec = dq_config_view(cfg, "drift"), *kj;
    const char *text = NULL;
    char num[64];

    memset(s, 0, sizeof *s);
    if (sec && !cJSON_IsNull(sec)) {
        if (!cJSON_IsObject(sec))
            return dq_config_fail(cfg, sec, err, errlen, "drift: expected a mapping (key, scan_interval)");
        if (dq_config_check_keys(cfg, sec, known, "drift", err, errlen) != 0)
            return -1;
        if (dq_config_duration_key(cfg, sec, "drift", "scan_interval", 0, "10m", &s->scan_interval_ms, err,
                                   errlen) != 0)
            return -1;
        kj = cJSON_GetObjectItemCaseSensitive(sec, "key");
        if (kj && !cJSON_IsNull(kj)) {
            text = dq_config_text(cfg, kj, num, sizeof num);
            if (text && text[0])
                dq_log_redact(text); /* before any message could carry it */
            if (!text || strlen(text) < DQ_DRIFT_KEY_MIN || strlen(text) > sizeof s->key.k)
                return dq_config_fail(cfg, kj, err, errlen,
                                      "drift.key: expected %d to %zu characters (e.g. openssl rand -hex 32)",
                                      DQ_DRIFT_KEY_MIN, sizeof s->key.k);
        }
    }
    if (!text) {
        text = getenv("DEPLOYQ_DRIFT_KEY");
        if (text && text[0]) {
            dq_log_redact(text);
            if (strlen(text) < DQ_DRIFT_KEY_MIN || strlen(text) > sizeof s->key.k) {
                snprintf(err, errlen, "DEPLOYQ_DRIFT_KEY: expected %d to %zu characters (e.g. openssl rand -hex 32)",
                         DQ_DRIFT_KEY_MIN, sizeof s->key.k);
                return -1;
            }
        } else {
            text = NULL;
        }
    }
    if (!text) {
        dq_drift_key_random(&s->key);
        return 0;
    }
    s->key.len = strlen(text);
    memcpy(s->key.k, text, s->key.len);
    s->key.persistent = 1;
    key_id(&s->key);
    return 0;
}

int dq_drift_hash(const dq_drift_key *k, const char *service, const char *name, const char *value,
                  size_t vlen, char out[DQ_DRIFT_HASH_HEX + 1])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    /* NUL between the parts: ("ab", "c") and ("a", "bc") hash apart */
    int ok = c && EVP_MAC_init(c, k->k, k->len, params) == 1 &&
             EVP_MAC_update(c, (const unsigned char *)service, strlen(service) + 1) == 1 &&
             EVP_MAC_update(c, (const unsigned char *)name, strlen(name) + 1) == 1 &&
             (vlen == 0 || EVP_MAC_update(c, (const unsigned char *)value, vlen) == 1) &&
             EVP_MAC_final(c, mac, &maclen, sizeof mac) == 1 && maclen >= DQ_DRIFT_HASH_HEX / 2;

    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    out[0] = '\0';
    if (ok)
        dq_hex(mac, DQ_DRIFT_HASH_HEX / 2, out);
    OPENSSL_cleanse(mac, sizeof mac);
    return ok ? 0 : -1;
}

/* ---- collecting variables ---- */

typedef struct varset {
    dq_drift_var *v;
    size_t n, cap;
    const char *service;
    const dq_drift_key *key;
} varset;

void dq_drift_vars_clear(dq_drift_vars *vs)
{
    if (!vs)
        return;
    for (size_t i = 0; i < vs->n; i++)
        free(vs->v[i].name);
    free(vs->v);
    vs->v = NULL;
    vs->n = 0;
}

static int var_cmp(const void *a, const void *b)
{
    return strcmp(((const dq_drift_var *)a)->name, ((const dq_drift_var *)b)->name);
}

const dq_drift_var *dq_drift_vars_find(const dq_drift_vars *vs, const char *name)
{
    dq_drift_var want = {.name = (char *)name};

    if (!vs || vs->n == 0)
        return NULL;
    return bsearch(&want, vs->v, vs->n, sizeof *vs->v, var_cmp);
}

/* Add name (trimmed; "" and "#..." skipped) and, when value is not NULL, its hash. A name
 * seen before takes the later line's hash. */
static int vars_add(varset *vs, const char *s, size_t len, const char *value, size_t vlen)
{
    dq_drift_var *nv, *it = NULL;

    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r'))
        len--;
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    if (len == 0 || *s == '#')
        return 0;
    for (size_t i = 0; i < vs->n && !it; i++)
        if (strlen(vs->v[i].name) == len && memcmp(vs->v[i].name, s, len) == 0)
            it = &vs->v[i];
    if (!it) {
        if (vs->n >= MAX_NAMES)
            return -1;
        if (vs->n == vs->cap) {
            vs->cap = vs->cap ? vs->cap * 2 : 32;
            nv = realloc(vs->v, vs->cap * sizeof *nv);
            if (!nv)
                return -1;
            vs->v = nv;
        }
        it = &vs->v[vs->n];
        memset(it, 0, sizeof *it);
        if (!(it->name = strndup(s, len)))
            return -1;
        vs->n++;
    }
    it->hash[0] = '\0';
    if (value && dq_drift_hash(vs->key, vs->service, it->name, value, vlen, it->hash) != 0)
        return -1;
    return 0;
}

/* Run argv through the process runner, its stdout into a malloc'd buffer (*len bytes),
 * within timeout_ms. stderr is kept apart (never mixed with the names) and only logged,
 * redacted, when the command fails. */
static char *run_capture(char *const *argv, int64_t timeout_ms, size_t *len, char *err, size_t errlen)
{
    char **env = dq_proc_env(NULL, 0);
    const dq_proc_opts o = {
        .argv = argv,
        .envp = env,
        .timeout_ms = timeout_ms,
        .out_max = DRIFT_OUTPUT_MAX,
        .out_keep = DQ_PROC_KEEP_HEAD, /* a cut list of names would be read as missing names */
        .stderr_apart = 1,
        .err_max = DRIFT_STDERR_MAX,
    };
    dq_proc_result res;
    dq_proc_status ps;
    char why[512], *out = NULL, *text;

    if (!env) {
        snprintf(err, errlen, "drift_check: out of memory");
        return NULL;
    }
    ps = dq_proc_run(&o, &res, why, sizeof why);
    dq_proc_env_free(env);
    if (ps == DQ_PROC_ESPAWN || (ps == DQ_PROC_OK && res.stopped == DQ_PROC_STOP_NONE && res.exit_code == 127))
        snprintf(err, errlen, "drift_check %s could not be run", argv[0]);
    else if (ps != DQ_PROC_OK)
        snprintf(err, errlen, "drift_check: %s", why);
    else if (res.stopped == DQ_PROC_STOP_TIMEOUT)
        snprintf(err, errlen, "drift_check %s did not finish within %lld ms", argv[0], (long long)timeout_ms);
    else if (res.stopped == DQ_PROC_STOP_OUTPUT)
        snprintf(err, errlen, "drift_check %s printed more than %d bytes", argv[0], DRIFT_OUTPUT_MAX);
    else if (res.exit_code != 0)
        snprintf(err, errlen, "drift_check %s failed (%s %d)", argv[0], res.exit_code >= 0 ? "exit" : "signal",
                 res.exit_code >= 0 ? res.exit_code : res.term_signal);
    else {
        out = res.out;
        *len = res.out_len;
        res.out = NULL; /* now the caller's */
    }
    if (!out && res.err_total > 0 && (text = dq_proc_text(res.err, res.err_len, res.err_total)) != NULL) {
        dq_warn("drift_check %s: its stderr: %s", argv[0], text);
        free(text);
    }
    if (res.out)
        OPENSSL_cleanse(res.out, res.out_len); /* a failed command's output may hold values */
    dq_proc_result_free(&res);
    return out;
}

static int read_command(const dq_gates *g, varset *vs, char *err, size_t errlen)
{
    size_t len = 0;
    char *out = run_capture(g->drift_check, g->drift_timeout_ms, &len, err, errlen);
    int rc = 0;

    if (!out)
        return -1;
    for (size_t at = 0; at < len && rc == 0;) {
        const char *line = out + at, *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        const char *eq = memchr(line, '=', n);

        at += n + 1;
        if (eq) { /* NAME=VALUE (the output of `env`): the value becomes its hash at once */
            size_t vlen = n - (size_t)(eq - line) - 1;

            if (vlen > 0 && eq[vlen] == '\r')
                vlen--;
            rc = vars_add(vs, line, (size_t)(eq - line), eq + 1, vlen);
        } else {
            rc = vars_add(vs, line, n, NULL, 0);
        }
    }
    OPENSSL_cleanse(out, len);
    free(out);
    if (rc != 0)
        snprintf(err, errlen, "drift_check: too many names");
    return rc;
}

/* Wipe every string of a parsed answer: the variables' values. */
static void cleanse_json(cJSON *j)
{
    for (; j; j = j->next) {
        if (j->valuestring)
            OPENSSL_cleanse(j->valuestring, strlen(j->valuestring));
        cleanse_json(j->child);
    }
}

static const char Q_VARIABLES[] =
    "query deployqVariables($projectId: String!, $environmentId: String!, $serviceId: String) "
    "{ variables(projectId: $projectId, environmentId: $environmentId, serviceId: $serviceId) }";

static int read_railway_vars(const dq_gates *g, varset *vs, char *err, size_t errlen)
{
    const cJSON *p = g->railway;
    const char *base = dq_json_str(p, "base_url"), *token = dq_json_str(p, "token");
    const char *token_env = dq_json_str(p, "token_env"), *kind = dq_json_str(p, "token_kind");
    char auth[2048], *body = NULL;
    const char *headers[3];
    cJSON *req = cJSON_CreateObject(), *vars, *resp = NULL;
    const cJSON *data, *v, *it;
    dq_http_response r = {0};
    dq_http_opts o = {0};
    int rc = -1;

    if (!base)
        base = "https://backboard.railway.com/graphql/v2";
    if (!token && token_env)
        token = getenv(token_env);
    if (!token || !token[0]) {
        snprintf(err, errlen, "railway variables: no token (token or token_env)");
        goto out;
    }
    if (kind && strcmp(kind, "project") == 0)
        snprintf(auth, sizeof auth, "Project-Access-Token: %s", token);
    else
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    headers[0] = auth;
    headers[1] = "Content-Type: application/json";
    headers[2] = NULL;
    if (!req)
        goto oom;
    cJSON_AddStringToObject(req, "query", Q_VARIABLES);
    vars = cJSON_AddObjectToObject(req, "variables");
    cJSON_AddStringToObject(vars, "projectId", dq_json_str(p, "project_id"));
    if (dq_json_str(p, "environment_id"))
        cJSON_AddStringToObject(vars, "environmentId", dq_json_str(p, "environment_id"));
    if (dq_json_str(p, "service_id"))
        cJSON_AddStringToObject(vars, "serviceId", dq_json_str(p, "service_id"));
    body = cJSON_PrintUnformatted(req);
    if (!body)
        goto oom;
    o.method = "POST";
    o.url = base;
    o.headers = headers;
    o.body = body;
    o.timeout_ms = (long)(g->drift_timeout_ms < 10000 ? g->drift_timeout_ms : 10000);
    o.max_retries = 2;
    o.retry_budget_ms = g->drift_timeout_ms;
    o.idempotent = 1; /* a query: repeating it is harmless */
    if (dq_http_request(&o, &r) != 0) {
        snprintf(err, errlen, "railway variables: %s", r.errstr[0] ? r.errstr : "no response");
        goto out;
    }
    if (r.status != 200) {
        snprintf(err, errlen, "railway variables: HTTP %ld", r.status);
        goto out;
    }
    resp = dq_json_parse(r.body, r.body_len, DQ_HTTP_MAX_BODY, 32, NULL, NULL, 0);
    if (!resp) {
        snprintf(err, errlen, "railway variables: the answer is not JSON");
        goto out;
    }
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(resp, "errors")) > 0) {
        const char *msg = dq_json_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "errors"), 0),
                                      "message");
        char clean[256];

        dq_redact(msg ? msg : "unknown error", clean, sizeof clean);
        snprintf(err, errlen, "railway variables: %s", clean);
        goto out;
    }
    data = cJSON_GetObjectItemCaseSensitive(resp, "data");
    v = cJSON_GetObjectItemCaseSensitive(data, "variables");
    if (!cJSON_IsObject(v)) {
        snprintf(err, errlen, "railway variables: no variables object in the answer");
        goto out;
    }
    /* Each value becomes its keyed hash here; the answer is wiped below. */
    cJSON_ArrayForEach(it, v)
    {
        char *text = cJSON_IsString(it) ? NULL : cJSON_PrintUnformatted(it);
        const char *val = cJSON_IsString(it) ? it->valuestring : text;
        int bad = vars_add(vs, it->string, strlen(it->string), val ? val : "", val ? strlen(val) : 0);

        if (text) {
            OPENSSL_cleanse(text, strlen(text));
            free(text);
        }
        if (bad) {
            snprintf(err, errlen, "railway variables: too many names");
            goto out;
        }
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    cleanse_json(resp);
    cJSON_Delete(resp);
    cJSON_Delete(req);
    free(body);
    if (r.body)
        OPENSSL_cleanse(r.body, r.body_len);
    dq_http_response_free(&r);
    OPENSSL_cleanse(auth, sizeof auth);
    return rc;
}

int dq_gates_read_hashed(const dq_gates *g, const dq_drift_key *k, dq_drift_vars *out, char *err,
                         size_t errlen)
{
    dq_drift_key tmp;
    varset vs = {.service = g->service ? g->service : ""};
    int rc;

    out->v = NULL;
    out->n = 0;
    if (!k) {
        dq_drift_key_random(&tmp);
        k = &tmp;
    }
    vs.key = k;
    if (g->drift_check)
        rc = read_command(g, &vs, err, errlen);
    else if (dq_gates_can_read_vars(g))
        rc = read_railway_vars(g, &vs, err, errlen);
    else {
        snprintf(err, errlen, "%s: nothing configured to read its variables", g->target);
        rc = -1;
    }
    if (k == &tmp)
        OPENSSL_cleanse(&tmp, sizeof tmp);
    out->v = vs.v;
    out->n = vs.n;
    if (rc != 0) {
        dq_drift_vars_clear(out);
        return -1;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, var_cmp);
    return 0;
}

int dq_gates_read_vars(const dq_gates *g, char ***out, size_t *n, char *err, size_t errlen)
{
    dq_drift_vars vs;

    *out = NULL;
    *n = 0;
    if (dq_gates_read_hashed(g, NULL, &vs, err, errlen) != 0)
        return -1;
    *out = calloc(vs.n + 1, sizeof **out);
    if (!*out) {
        dq_drift_vars_clear(&vs);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < vs.n; i++) {
        (*out)[i] = vs.v[i].name; /* now the caller's */
        vs.v[i].name = NULL;
    }
    *n = vs.n;
    vs.n = 0;
    dq_drift_vars_clear(&vs);
    return 0;
}

static int has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

void dq_drift_join(const char *const *v, size_t n, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n && used + 4 < outlen; i++) {
        int w = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", v[i]);

        if (w < 0 || (size_t)w >= outlen - used) {
            snprintf(out + (outlen > 4 ? outlen - 4 : 0), 4, "...");
            return;
        }
        used += (size_t)w;
    }
}

void dq_drift_diff_clear(dq_drift_diff *d)
{
    if (!d)
        return;
    free(d->missing);
    free(d->extra);
    free(d->differs);
    free(d->allowed);
    memset(d, 0, sizeof *d);
}

int dq_drift_compare(const dq_drift_vars *t, const dq_drift_vars *s, const dq_gates *rules,
                     dq_drift_diff *d)
{
    memset(d, 0, sizeof *d);
    d->missing = calloc(s->n + 1, sizeof *d->missing);
    d->extra = calloc(t->n + 1, sizeof *d->extra);
    d->differs = calloc(t->n + 1, sizeof *d->differs);
    d->allowed = calloc(t->n + 1, sizeof *d->allowed);
    if (!d->missing || !d->extra || !d->differs || !d->allowed) {
        dq_drift_diff_clear(d);
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        const char *name = s->v[i].name;
        const dq_drift_var *mine = dq_drift_vars_find(t, name);
        int ignored = rules && has(rules->drift_ignore, rules->n_ignore, name);

        if (ignored)
            continue;
        if (!mine) {
            d->missing[d->n_missing++] = name;
            continue;
        }
        if (!mine->hash[0] || !s->v[i].hash[0] || strcmp(mine->hash, s->v[i].hash) == 0)
            continue; /* equal, or one side gave the name only */
        if (rules && has(rules->drift_allow, rules->n_allow, name))
            d->allowed[d->n_allowed++] = name;
        else
            d->differs[d->n_differs++] = name;
    }
    for (size_t i = 0; i < t->n; i++)
        if (!dq_drift_vars_find(s, t->v[i].name))
            d->extra[d->n_extra++] = t->v[i].name;
    return 0;
}

int dq_drift_diff_drifted(const dq_drift_diff *d)
{
    return d->n_missing > 0 || d->n_differs > 0;
}

void dq_drift_diff_digest(const dq_drift_diff *d, const char *extra_text, char out[17])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;

    /* names only (not secrets): a digest of which variables drift, not of their values */
    ok = ok && EVP_DigestUpdate(c, "missing", 8) == 1;
    for (size_t i = 0; ok && i < d->n_missing; i++)
        ok = EVP_DigestUpdate(c, d->missing[i], strlen(d->missing[i]) + 1) == 1;
    ok = ok && EVP_DigestUpdate(c, "differs", 8) == 1;
    for (size_t i = 0; ok && i < d->n_differs; i++)
        ok = EVP_DigestUpdate(c, d->differs[i], strlen(d->differs[i]) + 1) == 1;
    if (ok && extra_text)
        ok = EVP_DigestUpdate(c, extra_text, strlen(extra_text) + 1) == 1;
    ok = ok && EVP_DigestFinal_ex(c, md, &len) == 1 && len >= 8;
    EVP_MD_CTX_free(c);
    out[0] = '\0';
    if (ok)
        dq_hex(md, 8, out);
}

int dq_gates_check_drift_values(const dq_gates *target, const dq_gates *source, const dq_drift_key *k,
                                dq_gate_report_fn fn, void *ctx, dq_drift_vars *target_vars)
{
    char err[512], msg[1024], list[700];
    dq_drift_vars have = {0}, src = {0};
    dq_drift_key tmp;
    dq_drift_diff d;
    const char **missing = NULL;
    size_t n_missing = 0;
    int reports = 0, compare = source && dq_gates_can_read_vars(source) && dq_gates_can_read_vars(target);

    if (target_vars) {
        target_vars->v = NULL;
        target_vars->n = 0;
    }
    if (target->n_required == 0 && !compare)
        return 0;
    if (!k) { /* one key for both sides, so that their hashes compare */
        dq_drift_key_random(&tmp);
        k = &tmp;
    }
    if (dq_gates_read_hashed(target, k, &have, err, sizeof err) != 0) {
        snprintf(msg, sizeof msg, "cannot read the variables of %s: %s", target->target, err);
        fn(ctx, "drift", msg);
        reports = 1;
        goto out;
    }
    missing = calloc(target->n_required + 1, sizeof *missing);
    for (size_t i = 0; missing && i < target->n_required; i++)
        if (!dq_drift_vars_find(&have, target->required_vars[i]))
            missing[n_missing++] = target->required_vars[i];
    if (n_missing > 0) {
        dq_drift_join(missing, n_missing, list, sizeof list);
        snprintf(msg, sizeof msg, "required variables missing in %s: %s", target->target, list);
        fn(ctx, "drift", msg);
        reports++;
    }
    free(missing);
    if (compare) {
        if (dq_gates_read_hashed(source, k, &src, err, sizeof err) != 0) {
            snprintf(msg, sizeof msg, "cannot read the variables of %s to compare: %s",
                     source->target, err);
            fn(ctx, "drift", msg);
            reports++;
        } else if (dq_drift_compare(&have, &src, target, &d) != 0) {
            fn(ctx, "drift", "out of memory comparing the variables");
            reports++;
        } else {
            if (d.n_missing > 0) {
                dq_drift_join(d.missing, d.n_missing, list, sizeof list);
                snprintf(msg, sizeof msg, "variables present in %s but missing in %s: %s",
                         source->target, target->target, list);
                fn(ctx, "drift", msg);
                reports++;
            }
            if (d.n_differs > 0) {
                dq_drift_join(d.differs, d.n_differs, list, sizeof list);
                snprintf(msg, sizeof msg,
                         "variables whose values differ between %s and %s: %s (list those expected "
                         "to differ in drift_allow)",
                         source->target, target->target, list);
                fn(ctx, "drift_values", msg);
                reports++;
            }
            dq_drift_diff_clear(&d);
        }
    }
    if (target_vars) {
        *target_vars = have; /* now the caller's */
        have.v = NULL;
        have.n = 0;
    }
out:
    if (k == &tmp)
        OPENSSL_cleanse(&tmp, sizeof tmp);
    dq_drift_vars_clear(&have);
    dq_drift_vars_clear(&src);
    return reports;
}

int dq_gates_check_drift(const dq_gates *target, const dq_gates *source, dq_gate_report_fn fn,
                         void *ctx)
{
    return dq_gates_check_drift_values(target, source, NULL, fn, ctx, NULL);
}

/* ---- recorded hash sets ---- */

char *dq_drift_record_key(const char *service, const char *env, char *out, size_t outlen)
{
    snprintf(out, outlen, "deployq:drift:vars:%s:%s", service, env);
    return out;
}

char *dq_drift_record_json(const dq_drift_key *k, const dq_drift_vars *vs, const char *version,
                           int64_t at_ms)
{
    cJSON *o = cJSON_CreateObject(), *vars;
    char *text = NULL;

    if (!o || !cJSON_AddStringToObject(o, "key_id", k->id) ||
        !cJSON_AddNumberToObject(o, "at", (double)at_ms) ||
        (version && !cJSON_AddStringToObject(o, "version", version)) ||
        !(vars = cJSON_AddObjectToObject(o, "vars")))
        goto out;
    for (size_t i = 0; i < vs->n; i++)
        if (!cJSON_AddStringToObject(vars, vs->v[i].name, vs->v[i].hash))
            goto out;
    text = cJSON_PrintUnformatted(o);
out:
    cJSON_Delete(o);
    return text;
}

int dq_drift_record_parse(const char *text, dq_drift_vars *vs, int64_t *at_ms, char *version,
                          size_t vlen, char key_id[17])
{
    cJSON *o = text ? dq_json_parse(text, strlen(text), 8 * 1024 * 1024, 4, NULL, NULL, 0) : NULL;
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(o, "vars"), *it;
    varset set = {0};
    int rc = -1;

    vs->v = NULL;
    vs->n = 0;
    if (!cJSON_IsObject(vars) || !dq_json_str(o, "key_id"))
        goto out;
    cJSON_ArrayForEach(it, vars)
    {
        const char *h = cJSON_GetStringValue(it);

        if (!h || strlen(h) > DQ_DRIFT_HASH_HEX || vars_add(&set, it->string, strlen(it->string), NULL, 0) != 0)
            goto out;
        dq_strlcpy(set.v[set.n - 1].hash, h, sizeof set.v[0].hash);
    }
    if (at_ms)
        *at_ms = (int64_t)dq_json_num(o, "at", 0);
    if (version)
        dq_strlcpy(version, dq_json_str(o, "version") ? dq_json_str(o, "version") : "", vlen);
    if (key_id)
        dq_strlcpy(key_id, dq_json_str(o, "key_id"), 17);
    rc = 0;
out:
    vs->v = set.v;
    vs->n = set.n;
    if (rc != 0)
        dq_drift_vars_clear(vs);
    else if (vs->n > 1)
        qsort(vs->v, vs->n, sizeof *vs->v, var_cmp);
    cJSON_Delete(o);
    return rc;
}

char *dq_gates_state_key(const char *state, const char *service, const char *env,
                         const char *version, char *out, size_t outlen)
{
    snprintf(out, outlen, "deployq:%s:%s:%s:%s", state, service, env, version);
    return out;
}
