/*
 * log.c - leveled logging to stderr as text or JSON lines, with secret redaction.
 *
 * The state below is the one global of common/ (see log.h). One mutex guards the secret
 * list and the write of each line, because librdkafka calls its log callback from its
 * own threads and two lines must never interleave on stderr.
 */
#include "log.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util.h"

#define LOG_MSG_MAX 4096
#define REDACT_MIN_LEN 4
#define REDACT_MASK "***"

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char log_program[64] = "deployq";
static dq_log_level log_level = DQ_LOG_INFO;
static int log_json = -1; /* -1: decided by isatty(stderr) at each write */
static char **log_secrets;
static size_t log_nsecrets;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int dq_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = DQ_LOG_DEBUG; i <= DQ_LOG_OFF; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void dq_log_init(const char *program, dq_log_level level, int json)
{
    const char *env_level = getenv("DEPLOYQ_LOG_LEVEL");
    const char *env_format = getenv("DEPLOYQ_LOG_FORMAT");
    int parsed = dq_log_level_parse(env_level);

    if (parsed >= 0)
        level = (dq_log_level)parsed;
    if (env_format != NULL && strcasecmp(env_format, "json") == 0)
        json = 1;
    else if (env_format != NULL && strcasecmp(env_format, "text") == 0)
        json = 0;

    pthread_mutex_lock(&log_mutex);
    if (program != NULL)
        dq_strlcpy(log_program, program, sizeof log_program);
    log_level = level;
    log_json = json < 0 ? -1 : json != 0;
    pthread_mutex_unlock(&log_mutex);
}

void dq_log_redact(const char *secret)
{
    if (secret == NULL || strlen(secret) < REDACT_MIN_LEN)
        return;
    char *copy = strdup(secret);
    if (copy == NULL)
        return;

    pthread_mutex_lock(&log_mutex);
    for (size_t i = 0; i < log_nsecrets; i++) {
        if (strcmp(log_secrets[i], copy) == 0) {
            pthread_mutex_unlock(&log_mutex);
            free(copy);
            return;
        }
    }
    char **grown = realloc(log_secrets, (log_nsecrets + 1) * sizeof *grown);
    if (grown == NULL) {
        pthread_mutex_unlock(&log_mutex);
        free(copy);
        return;
    }
    log_secrets = grown;
    log_secrets[log_nsecrets++] = copy;
    pthread_mutex_unlock(&log_mutex);
}

void dq_log_redact_clear(void)
{
    pthread_mutex_lock(&log_mutex);
    for (size_t i = 0; i < log_nsecrets; i++)
        free(log_secrets[i]);
    free(log_secrets);
    log_secrets = NULL;
    log_nsecrets = 0;
    pthread_mutex_unlock(&log_mutex);
}

char *dq_redact(const char *src, char *dst, size_t dstlen)
{
    if (dst == NULL || dstlen == 0)
        return dst;
    if (src == NULL) {
        dst[0] = '\0';
        return dst;
    }

    size_t o = 0;
    pthread_mutex_lock(&log_mutex);
    while (*src != '\0' && o + 1 < dstlen) {
        /* The longest matching secret wins, so a secret that contains another one is
         * masked whole rather than leaving its tail visible. */
        size_t match = 0;
        for (size_t i = 0; i < log_nsecrets; i++) {
            size_t n = strlen(log_secrets[i]);
            if (n > match && strncmp(src, log_secrets[i], n) == 0)
                match = n;
        }
        if (match > 0) {
            for (const char *m = REDACT_MASK; *m != '\0' && o + 1 < dstlen; m++)
                dst[o++] = *m;
            src += match;
        } else {
            dst[o++] = *src++;
        }
    }
    pthread_mutex_unlock(&log_mutex);
    dst[o] = '\0';
    return dst;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

void dq_log_vwrite(dq_log_level level, const char *file, int line, const char *fmt, va_list ap)
{
    char raw[LOG_MSG_MAX];
    char msg[LOG_MSG_MAX];
    char ts[DQ_TIME_LEN + 1];
    char src[128];

    if (level < DQ_LOG_DEBUG || level >= DQ_LOG_OFF || level < log_level || fmt == NULL)
        return;

    vsnprintf(raw, sizeof raw, fmt, ap);
    /* One message is one line: collectors split on newlines. */
    for (char *p = raw; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    dq_redact(raw, msg, sizeof msg);
    dq_time_format(dq_now_ms(), ts);
    snprintf(src, sizeof src, "%s:%d", base_name(file != NULL ? file : "?"), line);

    pthread_mutex_lock(&log_mutex);
    int json = log_json < 0 ? !isatty(STDERR_FILENO) : log_json;
    if (json) {
        cJSON *obj = cJSON_CreateObject();
        cJSON_AddStringToObject(obj, "ts", ts);
        cJSON_AddStringToObject(obj, "level", level_names[level]);
        cJSON_AddStringToObject(obj, "prog", log_program);
        cJSON_AddNumberToObject(obj, "pid", (double)getpid());
        cJSON_AddStringToObject(obj, "src", src);
        cJSON_AddStringToObject(obj, "msg", msg);
        char *text = cJSON_PrintUnformatted(obj);
        if (text != NULL)
            fprintf(stderr, "%s\n", text);
        else /* out of memory: still say something */
            fprintf(stderr, "%s %s\n", level_names[level], msg);
        free(text);
        cJSON_Delete(obj);
    } else {
        fprintf(stderr, "%s %s[%ld] %s: %s (%s)\n", ts, log_program, (long)getpid(),
                level_names[level], msg, src);
    }
    fflush(stderr);
    pthread_mutex_unlock(&log_mutex);
}

void dq_log_write(dq_log_level level, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dq_log_vwrite(level, file, line, fmt, ap);
    va_end(ap);
}
