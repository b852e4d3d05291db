/*
 * direct.c - break-glass: `deployq deploy --direct` and `deployq spool flush`.
 *
 * When Kafka or the workers are down, an operator can still deploy: `deploy --direct`
 * checks the request as the validator would (schema, an operator key that is known, not
 * retired and really held, the signature, the target in the configuration), takes the
 * target's Redis lock when Redis answers (and says loudly when it cannot), runs the same
 * provider chain as the executor (common/domain/execute.c) from this machine, polls to a
 * terminal state, and appends every event it would have emitted to a local spool file
 * (JSON lines, mode 0600), each marked data.direct = true. `spool flush` later publishes
 * the spooled events to deployq.events in order. The events' ids are deterministic, and
 * the flush records how far it got (<spool>.flushed) after each acknowledged event and
 * empties the spool at the end, so a second flush sends nothing and an interrupted one
 * resumes where it stopped: the registry sees each event once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "event.h"
#include "execute.h"
#include "json.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "redis.h"
#include "schema.h"
#include "sign.h"
#include "signals.h"
#include "stack.h"
#include "util.h"

#define SPOOL_NAME "spool.jsonl"
#define SPOOL_LINE_MAX (1 << 20)

static const char deploy_usage[] =
    "Usage: deployq deploy --direct --service NAME --env NAME --version VERSION --reason TEXT\n"
    "                      [--key FILE] [--key-id ID] [options]\n"
    "\n"
    "Break-glass deploy from this machine, for when Kafka or the workers are down. Checks\n"
    "the request like the validator (schema, operator key, signature, target), takes the\n"
    "target's Redis lock when Redis answers (warns loudly when it cannot), runs the\n"
    "target's provider chain, polls to a terminal state and writes every event to the\n"
    "local spool (marked direct). Publish them later with `deployq spool flush`.\n"
    "\n"
    "      --direct            required: says you mean to bypass Kafka and the workers\n"
    "  -s, --service NAME      the service, as named in deployq.yaml\n"
    "  -e, --env NAME          the environment\n"
    "  -v, --version VERSION   what to deploy: a git sha or an image tag\n"
    "      --reason TEXT       why the normal path is not used (required; kept in events)\n"
    "  -k, --key FILE          the operator's private key (default $DEPLOYQ_OPERATOR_KEY)\n"
    "      --key-id ID         its id in deployq.yaml (default: the file's base name)\n"
    "      --spool FILE        the spool (default $DEPLOYQ_SPOOL, else <state dir>/spool.jsonl)\n"
    "      --lock-wait SECS    how long to wait for a busy target (default executor.lock_wait)\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 deployed, 3 the deploy failed, 1 not deployed (error on stderr), 2 usage.\n";

static const char spool_usage[] =
    "Usage: deployq spool flush [--spool FILE] [options]\n"
    "\n"
    "Publish the events a break-glass deploy spooled to deployq.events, in order, each once;\n"
    "then empty the spool. An interrupted flush resumes where it stopped.\n"
    "\n"
    "      --spool FILE        the spool (default $DEPLOYQ_SPOOL, else <state dir>/spool.jsonl)\n"
    "  -t, --timeout SECONDS   per event, for the broker's acknowledgement (default 10)\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 all published (or nothing to do), 1 not all (the rest stays), 2 usage.\n";

/* The spool path: flag, $DEPLOYQ_SPOOL, <state dir>/spool.jsonl (the state directory
 * checked as stack.h says; *in_state_dir set then, so the spool is never opened through a
 * symbolic link). malloc'd, or NULL with the reason in err. */
static char *spool_path(const char *flag, int *in_state_dir, char *err, size_t errlen)
{
    const char *env = getenv("DEPLOYQ_SPOOL");
    char *dir = NULL, *out;
    size_t n;
    int fd;

    *in_state_dir = 0;
    if (flag)
        return strdup(flag);
    if (env && env[0])
        return strdup(env);
    fd = dq_stack_dir_open(1, &dir, err, errlen);
    if (fd < 0)
        return NULL;
    close(fd);
    n = strlen(dir) + sizeof SPOOL_NAME + 1;
    out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", dir, SPOOL_NAME);
    else
        snprintf(err, errlen, "out of memory");
    free(dir);
    *in_state_dir = 1;
    return out;
}

/* ---- deploy --direct ---- */

typedef struct spool_sink {
    const char *path;
    int nofollow; /* the spool is in the state directory: never through a link */
    dq_lock *lock; /* may be NULL */
    volatile sig_atomic_t *stop;
} spool_sink;

static int direct_continue(void *ctx)
{
    spool_sink *s = ctx;
    return !*s->stop && !(s->lock && dq_lock_lost(s->lock));
}

/* Append one line, durably, under an exclusive flock (a flush may run at the same time). */
static int spool_sink_fn(void *ctx, const dq_event *ev, char *err, size_t errlen)
{
    spool_sink *s = ctx;
    char *json = dq_event_encode(ev);
    int fd, rc = -1;
    size_t len;

    if (!json) {
        snprintf(err, errlen, "out of memory encoding %s", ev->type);
        return -1;
    }
    fd = open(s->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (s->nofollow ? O_NOFOLLOW : 0),
              0600);
    if (fd < 0) {
        snprintf(err, errlen, "spool %s: %s", s->path, strerror(errno));
        free(json);
        return -1;
    }
    len = strlen(json);
    json[len] = '\n'; /* replaces the NUL: write exactly len + 1 bytes below */
    if (flock(fd, LOCK_EX) == 0 && write(fd, json, len + 1) == (ssize_t)(len + 1) && fsync(fd) == 0)
        rc = 0;
    else
        snprintf(err, errlen, "spool %s: %s", s->path, strerror(errno));
    close(fd);
    free(json);
    if (rc == 0) {
        const char *p = dq_json_str(ev->data, "provider");
        printf("%s%s%s\n", ev->type, p ? " " : "", p ? p : "");
        fflush(stdout);
    }
    return rc;
}

/* The checks of the validator that make sense offline: the operator key (known, role
 * operator, not retired, matching the private key), a signature over the request that
 * verifies with the configured public key, the request schema, the target. */
static int direct_validate(const dq_cli *cli, const dq_config *cfg, const char *key_path,
                           const char *key_id, const dq_request *req)
{
    const dq_key *k = dq_config_key(cfg, key_id);
    dq_signer *signer = NULL;
    dq_schema_set *schemas = NULL;
    char *pub = NULL, *text = NULL, *sig = NULL;
    cJSON *doc = NULL;
    char err[1024];
    int ok = 0;

    if (!k) {
        dq_cli_fail(cli, "key %s is not in %s", key_id, cfg->path ? cfg->path : "the configuration");
        goto out;
    }
    if (!k->role || strcmp(k->role, "operator") != 0) {
        dq_cli_fail(cli, "key %s has role %s; break-glass deploys need an operator key", key_id,
                    k->role ? k->role : "ci");
        goto out;
    }
    if (k->retired) {
        dq_cli_fail(cli, "key %s is retired", key_id);
        goto out;
    }
    signer = dq_signer_load(key_path, err, sizeof err);
    if (!signer) {
        dq_cli_fail(cli, "%s", err);
        goto out;
    }
    pub = dq_signer_public_b64(signer);
    if (!pub || strcmp(pub, k->public_key) != 0) {
        dq_cli_fail(cli, "%s is not the private key of %s", key_path, key_id);
        goto out;
    }
    text = dq_request_encode(req);
    sig = text ? dq_sign(signer, text, strlen(text)) : NULL;
    if (!sig || dq_verify(k->public_key, text, strlen(text), sig, err, sizeof err) != 1) {
        dq_cli_fail(cli, "the request signature does not verify");
        goto out;
    }
    schemas = dq_schema_set_load(cfg->schemas_dir, err, sizeof err);
    if (!schemas) {
        dq_cli_fail(cli, "schemas: %s", err);
        goto out;
    }
    doc = dq_json_parse(text, strlen(text), cfg->max_request_bytes, cfg->max_depth, NULL, err,
                        sizeof err);
    if (!doc || dq_schema_validate(dq_schema_set_request(schemas), doc, err, sizeof err) != 0) {
        dq_cli_fail(cli, "the request is invalid: %s", err);
        goto out;
    }
    if (!dq_config_environment(cfg, req->service, req->environment)) {
        dq_cli_fail(cli, "%s/%s is not a configured target", req->service, req->environment);
        goto out;
    }
    ok = 1;
out:
    cJSON_Delete(doc);
    dq_schema_set_free(schemas);
    free(sig);
    free(text);
    free(pub);
    dq_signer_free(signer);
    return ok;
}

int dq_cmd_deploy(int argc, char **argv)
{
    dq_cli cli = {.verb = "deploy", .usage = deploy_usage, .takes = DQ_CLI_COMMON};
    const char *service = NULL, *env = NULL, *version = NULL, *reason = NULL, *spool_flag = NULL;
    const char *key_path = getenv("DEPLOYQ_OPERATOR_KEY"), *key_id = NULL;
    long long lock_wait_s = -1;
    int direct = 0, rc;
    const dq_cli_opt opts[] = {
        DQ_OPT_FLAG(0, "direct", &direct),
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('v', "version", &version),
        DQ_OPT_STRING(0, "reason", &reason),
        DQ_OPT_STRING('k', "key", &key_path),
        DQ_OPT_STRING(0, "key-id", &key_id),
        DQ_OPT_STRING(0, "spool", &spool_flag),
        DQ_OPT_INT(0, "lock-wait", &lock_wait_s, 0, 86400, "--lock-wait must be 0..86400 seconds"),
        DQ_OPT_END,
    };
    char err[1024], keyidbuf[128], dep_id[DQ_UUID_LEN + 1], nonce[DQ_UUID_LEN + 1];
    char issued[DQ_TIME_LEN + 1], actor[256];
    dq_config *cfg = NULL;
    dq_exec_settings settings;
    dq_lock *lock = NULL;
    dq_redis *redis = NULL;
    char *spool = NULL;
    dq_request req = {0};
    spool_sink sink = {0};
    dq_exec x;
    dq_exec_outcome outc;
    dq_exec_status st;
    dq_provider_request preq;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    if (!direct)
        return dq_cli_usage(&cli, deploy_usage, 2,
                            "only --direct (break-glass) is supported; normal deploys go through `deployq submit`");
    if (!service || !env || !version)
        return dq_cli_usage(&cli, deploy_usage, 2, "--service, --env and --version are required");
    if (!reason || !reason[0] || strlen(reason) > 512)
        return dq_cli_usage(&cli, deploy_usage, 2, "--reason is required (1..512 characters)");
    if (!key_path) {
        dq_cli_fail(&cli, "no operator key: pass --key FILE or set DEPLOYQ_OPERATOR_KEY");
        return 1;
    }
    if (!key_id) {
        if (dq_cli_key_id_from_path(key_path, keyidbuf, sizeof keyidbuf) != 0) {
            dq_cli_fail(&cli, "cannot derive a key id from %s: pass --key-id", key_path);
            return 1;
        }
        key_id = keyidbuf;
    }

    cfg = dq_cli_load_config(&cli);
    if (!cfg)
        goto out;
    if (dq_exec_settings_load(cfg, &settings, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    dq_uuid_v4(dep_id);
    dq_uuid_v4(nonce);
    dq_time_format(dq_now_ms(), issued);
    req.deployment_id = dep_id;
    req.service = (char *)service;
    req.environment = (char *)env;
    req.version = (char *)version;
    req.strategy = "rolling";
    req.requested_by = getenv("USER");
    req.nonce = nonce;
    req.issued_at = issued;
    if (!direct_validate(&cli, cfg, key_path, key_id, &req))
        goto out;
    {
        char why[512] = "";

        spool = spool_path(spool_flag, &sink.nofollow, why, sizeof why);
        if (!spool) {
            dq_cli_fail(&cli, "no spool: %s; or pass --spool FILE", why);
            goto out;
        }
    }
    sink.path = spool;
    sink.stop = dq_stop_flag_install();

    /* The lock when Redis answers; a deploy without it is allowed, loudly. */
    switch (dq_lock_try(cfg->redis_url, cfg->redis_timeout_ms, service, env, settings.lock_ttl_ms,
                        &lock, err, sizeof err)) {
    case DQ_LOCK_TAKEN:
        break;
    case DQ_LOCK_BUSY: {
        int64_t wait_ms = lock_wait_s >= 0 ? lock_wait_s * 1000 : settings.lock_wait_ms;
        fprintf(stderr, "deployq: deploy: %s/%s is busy (another deploy holds its lock); waiting up to %lld s\n",
                service, env, (long long)(wait_ms / 1000));
        if (dq_lock_acquire(cfg->redis_url, cfg->redis_timeout_ms, service, env, settings.lock_ttl_ms,
                            wait_ms, NULL, NULL, &lock, err, sizeof err) != DQ_LOCK_TAKEN) {
            dq_cli_fail(&cli, "%s/%s is still busy; nothing was deployed", service, env);
            goto out;
        }
        break;
    }
    case DQ_LOCK_ERROR:
    default:
        fprintf(stderr,
                "deployq: deploy: WARNING: Redis unreachable (%s): deploying %s/%s WITHOUT the "
                "target lock (fence 0). Make sure nothing else deploys this target now.\n",
                err, service, env);
        break;
    }
    sink.lock = lock;
    if (lock)
        redis = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);

    dq_actor("deployq-direct", actor, sizeof actor);
    memset(&x, 0, sizeof x);
    x.cfg = cfg;
    x.redis = redis;
    x.fence = lock ? dq_lock_fence(lock) : 0;
    x.actor = actor;
    x.direct = 1;
    x.direct_reason = reason;
    x.sink = spool_sink_fn;
    x.sink_ctx = &sink;
    x.should_continue = direct_continue;
    x.ctx = &sink;
    x.chain.cancel_on_timeout = settings.cancel_on_timeout;
    x.chain.cancel_wait_ms = settings.cancel_wait_ms;
    preq = (dq_provider_request){.deployment_id = dep_id, .service = service, .environment = env,
                                 .version = version};
    printf("deployment %s: %s/%s %s (break-glass, fence %lld)\n", dep_id, service, env, version,
           (long long)x.fence);
    fflush(stdout);
    st = dq_execute(&x, &preq, &outc, err, sizeof err);
    if (st != DQ_EXEC_DONE) {
        dq_cli_fail(&cli, "deploy %s not concluded: %s", dep_id, err);
        goto out;
    }
    if (strcmp(outc.type, DQ_EV_SUCCEEDED) == 0) {
        printf("deployed through %s (%s); events spooled to %s: run `deployq spool flush` once Kafka is back\n",
               outc.provider, outc.provider_id, spool);
        rc = 0;
    } else {
        printf("deploy failed (%s): %s; events spooled to %s\n", outc.reason, outc.detail, spool);
        rc = 3;
    }
out:
    dq_lock_release(lock);
    dq_redis_free(redis);
    free(spool);
    dq_config_free(cfg);
    return rc;
}

/* ---- spool flush ---- */

/* The byte offset already published, from <spool>.flushed (0 when absent). */
static long long flushed_read(const char *mark)
{
    char *text = dq_read_file(mark, 64, NULL);
    long long v = 0;

    if (text && dq_parse_int(text, 0, INT64_MAX, &v) != 0)
        v = 0;
    free(text);
    return v;
}

/* Write <spool>.flushed atomically and durably. 0 or -1. */
static int flushed_write(const char *mark, long long off)
{
    char tmp[4096], buf[32];
    int fd, n, rc = -1;

    snprintf(tmp, sizeof tmp, "%s.tmp", mark);
    n = snprintf(buf, sizeof buf, "%lld", off);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (write(fd, buf, (size_t)n) == n && fsync(fd) == 0)
        rc = 0;
    close(fd);
    if (rc == 0 && rename(tmp, mark) != 0)
        rc = -1;
    return rc;
}

int dq_cmd_spool(int argc, char **argv)
{
    dq_cli cli = {.verb = "spool", .usage = spool_usage, .takes = DQ_CLI_COMMON, .n_args = 1,
                  .args_reason = "expected: spool flush"};
    const char *spool_flag = NULL;
    long long timeout_s = 10, off;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING(0, "spool", &spool_flag),
        DQ_OPT_INT('t', "timeout", &timeout_s, 1, 3600, "--timeout must be 1..3600 seconds"),
        DQ_OPT_END,
    };
    int rc, fd = -1, sent = 0;
    char mark[4096], err[1024];
    int in_state_dir = 0;
    char *spool = NULL, *text = NULL;
    size_t len = 0;
    dq_config *cfg = NULL;
    dq_producer *producer = NULL;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (strcmp(cli.args[0], "flush") != 0)
        return dq_cli_usage(&cli, spool_usage, 2, "expected: spool flush");
    rc = 1;

    {
        char why[512] = "";

        spool = spool_path(spool_flag, &in_state_dir, why, sizeof why);
        if (!spool) {
            dq_cli_fail(&cli, "no spool: %s; or pass --spool FILE", why);
            goto out;
        }
    }
    snprintf(mark, sizeof mark, "%s.flushed", spool);
    fd = open(spool, O_RDWR | O_CLOEXEC | (in_state_dir ? O_NOFOLLOW : 0));
    if (fd < 0 && errno == ENOENT) {
        printf("spool %s: nothing to flush\n", spool);
        rc = 0;
        goto out;
    }
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        dq_cli_fail(&cli, "spool %s: %s", spool, strerror(errno));
        goto out;
    }
    text = dq_read_file(spool, 256u << 20, &len);
    if (!text) {
        dq_cli_fail(&cli, "spool %s: cannot read it", spool);
        goto out;
    }
    off = flushed_read(mark);
    if (off < 0 || (size_t)off > len)
        off = 0; /* a mark beyond the file belongs to an older spool */
    if ((size_t)off == len) {
        printf("spool %s: nothing to flush\n", spool);
        rc = 0;
        goto empty;
    }
    cfg = dq_cli_load_config(&cli);
    if (!cfg)
        goto out;
    producer = dq_producer_new(cfg, err, sizeof err);
    if (!producer) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    while ((size_t)off < len) {
        char *line = text + off, *nl = memchr(line, '\n', len - (size_t)off);
        size_t ll = nl ? (size_t)(nl - line) : len - (size_t)off;
        char why[512], key[300];
        dq_event *ev;

        if (!nl) {
            /* a torn last line (a deploy killed mid-write): not an event; leave it */
            dq_cli_fail(&cli, "spool %s: incomplete last line left in place", spool);
            goto out;
        }
        ev = dq_event_decode(line, ll, why, sizeof why);
        if (!ev) {
            dq_cli_fail(&cli, "spool %s at byte %lld: not an event (%s); fix or remove that line", spool,
                        off, why);
            goto out;
        }
        dq_target_key(ev->service ? ev->service : "", ev->environment ? ev->environment : "", key, sizeof key);
        if (dq_producer_send(producer, cfg->topic_events, key, line, ll, (int)timeout_s * 1000, NULL,
                             NULL, err, sizeof err) != 0) {
            dq_event_free(ev);
            dq_cli_fail(&cli, "%s; %d event(s) published, the rest stays in %s", err, sent, spool);
            goto out;
        }
        dq_event_free(ev);
        off += (long long)ll + 1;
        sent++;
        /* how far we got, before the next send: a crash repeats at most this one event */
        if (flushed_write(mark, off) != 0) {
            dq_cli_fail(&cli, "cannot record progress in %s: %s", mark, strerror(errno));
            goto out;
        }
    }
    printf("spool %s: %d event(s) published to %s\n", spool, sent, cfg->topic_events);
    rc = 0;
empty:
    /* everything is out: empty the spool, then forget the mark */
    if (ftruncate(fd, 0) != 0 || fsync(fd) != 0) {
        dq_cli_fail(&cli, "spool %s: cannot empty it: %s", spool, strerror(errno));
        rc = 1;
        goto out;
    }
    unlink(mark);
out:
    if (fd >= 0)
        close(fd);
    dq_producer_free(producer);
    dq_config_free(cfg);
    free(text);
    free(spool);
    return rc;
}
