/*
 * stack.c - the state file through which `deployq up` is found by later commands.
 */
#include "stack.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "util.h"

char *dq_stack_dir(int create)
{
    char buf[4096];
    const char *env = getenv("DEPLOYQ_STATE_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");

    if (env && *env)
        snprintf(buf, sizeof buf, "%s", env);
    else if (xdg && *xdg)
        snprintf(buf, sizeof buf, "%s/deployq", xdg);
    else
        snprintf(buf, sizeof buf, "/tmp/deployq-%u", (unsigned)getuid());
    if (create && mkdir(buf, 0700) != 0 && errno != EEXIST)
        return NULL;
    return strdup(buf);
}

static char *stack_file(void)
{
    char *dir = dq_stack_dir(0);
    char *path;
    size_t n;

    if (!dir)
        return NULL;
    n = strlen(dir) + sizeof "/stack.json";
    path = malloc(n);
    if (path)
        snprintf(path, n, "%s/stack.json", dir);
    free(dir);
    return path;
}

static char *dup_member(const cJSON *obj, const char *name)
{
    const char *s = dq_json_str(obj, name);
    return s ? strdup(s) : NULL;
}

dq_stack *dq_stack_find(void)
{
    char *path = stack_file();
    char *text;
    size_t len = 0;
    cJSON *root;
    dq_stack *s = NULL;

    if (!path)
        return NULL;
    text = dq_read_file(path, 65536, &len);
    free(path);
    if (!text)
        return NULL;
    root = dq_json_parse(text, len, 65536, 8, NULL, NULL, 0);
    free(text);
    if (!root)
        return NULL;
    s = calloc(1, sizeof *s);
    if (s) {
        s->pid = (pid_t)dq_json_num(root, "pid", 0);
        s->brokers = dup_member(root, "brokers");
        s->redis_url = dup_member(root, "redis_url");
        s->config_path = dup_member(root, "config");
        s->ci_key_path = dup_member(root, "ci_key");
        s->ci_key_id = dup_member(root, "ci_key_id");
        s->approver_key_path = dup_member(root, "approver_key");
    }
    cJSON_Delete(root);
    /* A stack whose process is gone left a stale file behind: not a stack. */
    if (s && (s->pid <= 0 || (kill(s->pid, 0) != 0 && errno == ESRCH))) {
        dq_stack_free(s);
        return NULL;
    }
    return s;
}

int dq_stack_write(const dq_stack *s)
{
    char *dir = dq_stack_dir(1);
    char *path = stack_file();
    char tmp[4200];
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    FILE *f = NULL;
    int rc = -1;

    if (!dir || !path || !root)
        goto out;
    cJSON_AddNumberToObject(root, "pid", s->pid);
    if (s->brokers)
        cJSON_AddStringToObject(root, "brokers", s->brokers);
    if (s->redis_url)
        cJSON_AddStringToObject(root, "redis_url", s->redis_url);
    if (s->config_path)
        cJSON_AddStringToObject(root, "config", s->config_path);
    if (s->ci_key_path)
        cJSON_AddStringToObject(root, "ci_key", s->ci_key_path);
    if (s->ci_key_id)
        cJSON_AddStringToObject(root, "ci_key_id", s->ci_key_id);
    if (s->approver_key_path)
        cJSON_AddStringToObject(root, "approver_key", s->approver_key_path);
    text = cJSON_Print(root);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || !text || fputs(text, f) < 0 || fputc('\n', f) < 0)
        goto out;
    if (fclose(f) != 0) {
        f = NULL;
        goto out;
    }
    f = NULL;
    /* rename() makes the file appear whole or not at all to a concurrent reader. */
    rc = rename(tmp, path);
out:
    if (f)
        fclose(f);
    free(text);
    cJSON_Delete(root);
    free(path);
    free(dir);
    return rc;
}

void dq_stack_remove(void)
{
    char *path = stack_file();

    if (path)
        unlink(path);
    free(path);
}

void dq_stack_free(dq_stack *s)
{
    if (!s)
        return;
    free(s->brokers);
    free(s->redis_url);
    free(s->config_path);
    free(s->ci_key_path);
    free(s->ci_key_id);
    free(s->approver_key_path);
    free(s);
}
