/*
 * seedgen.c - writes the generated part of the fuzz seed corpora (tests/fuzz/seeds.sh
 * runs it; the output is checked in under tests/fuzz/corpus/):
 *
 *   seedgen request OUTDIR REQUEST.json...   each request document signed with the fuzz
 *                                            key, as the validator receives it, plus a
 *                                            few wrappers naming other keys
 *   seedgen reglog OUTDIR                    registry logs written by the real writer,
 *                                            in fuzz_reglog's input layout
 *
 * A seed with an intact signature is what lets the fuzzer reach the checks behind the
 * signature (time window, service lookup, the nonce step); a log written by
 * dq_reglog_commit is what lets it start from whole, chained records.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "reglog.h"

static int write_out(const char *dir, const char *name, const void *buf, size_t len)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "seedgen: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

static int gen_requests(const char *out, int argc, char **argv)
{
    static const char *const other_keys[] = {"fuzz-old", "fuzz-approver", "nobody"};
    char err[256], name[512];
    dq_signer *s = dq_signer_from_pem(dq_fuzz_key_pem, sizeof dq_fuzz_key_pem - 1, err, sizeof err);
    int rc = 0;

    if (!s) {
        fprintf(stderr, "seedgen: %s\n", err);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        size_t len;
        char *text = dq_read_file(argv[i], 1024 * 1024, &len);
        char *env;

        if (!text) {
            fprintf(stderr, "seedgen: cannot read %s\n", argv[i]);
            rc = 1;
            continue;
        }
        /* A trailing newline would be signed too; the CLI signs the compact text. */
        while (len > 0 && text[len - 1] == '\n')
            text[--len] = '\0';
        env = dq_sign_envelope(s, DQ_FUZZ_KEY_CI, text);
        snprintf(name, sizeof name, "signed-%s", base_name(argv[i]));
        if (!env || write_out(out, name, env, strlen(env)) != 0)
            rc = 1;
        free(env);
        if (i == 0) {
            for (size_t k = 0; k < sizeof other_keys / sizeof other_keys[0]; k++) {
                env = dq_sign_envelope(s, other_keys[k], text);
                snprintf(name, sizeof name, "signed-key-%s.json", other_keys[k]);
                if (!env || write_out(out, name, env, strlen(env)) != 0)
                    rc = 1;
                free(env);
            }
        }
        free(text);
    }
    dq_signer_free(s);
    return rc;
}

/* Pack the segments of <dir>/p0 into fuzz_reglog's layout: flags, then segments in name
 * order joined by "SEG|". */
static int pack(const char *logdir, unsigned char flags, const char *out, const char *name,
                size_t cut)
{
    char pdir[512], path[1024];
    struct dirent **names = NULL;
    unsigned char *buf = malloc(1);
    size_t len = 1;
    int n, rc = 0;

    if (!buf)
        return -1;
    buf[0] = flags;
    snprintf(pdir, sizeof pdir, "%s/p0", logdir);
    n = scandir(pdir, &names, NULL, alphasort);
    for (int i = 0, seg = 0; i < n; i++) {
        size_t flen;
        char *file;
        unsigned char *grown;

        if (!strstr(names[i]->d_name, ".seg")) {
            free(names[i]);
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", pdir, names[i]->d_name);
        free(names[i]);
        file = dq_read_file(path, 1024 * 1024, &flen);
        grown = file ? realloc(buf, len + 4 + flen) : NULL;
        if (!grown) {
            free(file);
            rc = -1;
            continue;
        }
        buf = grown;
        if (seg++ > 0) {
            memcpy(buf + len, "SEG|", 4);
            len += 4;
        }
        memcpy(buf + len, file, flen);
        len += flen;
        free(file);
    }
    free(names);
    if (cut > 0 && cut < len)
        len -= cut; /* a torn tail: the last record cut short */
    if (rc == 0)
        rc = write_out(out, name, buf, len);
    free(buf);
    return rc;
}

static int write_log(const char *dir, int records, uint64_t segment_bytes)
{
    char err[256], payload[128];
    dq_reglog_opts opts = {.segment_bytes = segment_bytes};
    dq_reglog *log = dq_reglog_open(dir, 0, &opts, err, sizeof err);

    if (!log) {
        fprintf(stderr, "seedgen: %s\n", err);
        return -1;
    }
    for (int i = 0; i < records; i++) {
        int n = snprintf(payload, sizeof payload,
                         "{\"schema\":\"deployq.event/v1\",\"type\":\"deploy.requested\",\"n\":%d}", i);

        if (dq_reglog_append(log, 10 + 3 * i, payload, (size_t)n) != DQ_REGLOG_OK ||
            dq_reglog_commit(log) != DQ_REGLOG_OK) {
            fprintf(stderr, "seedgen: %s\n", dq_reglog_errstr(log));
            dq_reglog_close(log);
            return -1;
        }
    }
    dq_reglog_close(log);
    return 0;
}

static int gen_reglog(const char *out)
{
    char tmpl[] = "/tmp/dq-seedgen-XXXXXX", dir[64];
    int rc = 0;

    if (!mkdtemp(tmpl))
        return 1;
    /* One segment of three records; the same with every repair flag; a torn tail. */
    snprintf(dir, sizeof dir, "%s/a", tmpl);
    rc |= write_log(dir, 3, 0);
    rc |= pack(dir, 0x00, out, "log-3-records", 0);
    rc |= pack(dir, 0x0f, out, "log-3-records-repair", 0);
    rc |= pack(dir, 0x00, out, "log-torn-tail", 10);
    /* Small segments: five records over several files, chained across them. */
    snprintf(dir, sizeof dir, "%s/b", tmpl);
    rc |= write_log(dir, 5, 200);
    rc |= pack(dir, 0x08, out, "log-5-records-segments", 0);
    rc |= pack(dir, 0x2f, out, "log-5-records-segments-tail-only", 0);
    /* An empty log and a single empty record. */
    rc |= write_out(out, "log-empty", "\0", 1);
    snprintf(dir, sizeof dir, "%s/c", tmpl);
    {
        char err[256];
        dq_reglog *log = dq_reglog_open(dir, 0, NULL, err, sizeof err);

        rc |= !log || dq_reglog_append(log, 0, "", 0) != DQ_REGLOG_OK ||
              dq_reglog_commit(log) != DQ_REGLOG_OK;
        dq_reglog_close(log);
    }
    rc |= pack(dir, 0x00, out, "log-1-empty-record", 0);
    /* The test directories are removed by the caller's rm -rf (seeds.sh). */
    printf("%s\n", tmpl);
    return rc != 0;
}

int main(int argc, char **argv)
{
    dq_fuzz_quiet();
    if (argc >= 3 && strcmp(argv[1], "request") == 0)
        return gen_requests(argv[2], argc - 3, argv + 3);
    if (argc == 3 && strcmp(argv[1], "reglog") == 0)
        return gen_reglog(argv[2]);
    fprintf(stderr, "usage: seedgen request OUTDIR REQUEST.json... | seedgen reglog OUTDIR\n");
    return 2;
}
