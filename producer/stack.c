/*
 * stack.c - the state directory, checked before anything is read from or written to it,
 * and the state file through which `deployq up` is found by later commands.
 */
#include "stack.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "util.h"

#define STACK_FILE "stack.json"
#define STACK_FILE_MAX 65536

/* What to do about a refused directory, said at the end of the error line. */
#define FIX_DEFAULT "remove it or set DEPLOYQ_STATE_DIR to a directory of your own"
#define FIX_ENV "point DEPLOYQ_STATE_DIR at a directory of your own (mode 0700)"
#define FIX_SUBDIR "remove it"

/* Where the state directory is. *strict is set for the two default locations: only
 * deployq creates them, always 0700, so any other mode there means someone else's hand. */
static int state_dir_path(char *buf, size_t len, int *strict)
{
    const char *env = getenv("DEPLOYQ_STATE_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;

    *strict = !(env && *env);
    if (env && *env)
        n = snprintf(buf, len, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(buf, len, "%s/deployq", xdg);
    else
        n = snprintf(buf, len, "/tmp/deployq-%u", (unsigned)getuid());
    if (n < 0 || (size_t)n >= len)
        return -1;
    /* "dir/" would follow a symbolic link named dir despite O_NOFOLLOW. */
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    return 0;
}

/* One line: "state directory PATH <why>; <fix>". errno is set to e; returns -1. */
__attribute__((format(printf, 6, 7))) static int refuse(char *err, size_t errlen, int e,
                                                        const char *path, const char *fix,
                                                        const char *fmt, ...)
{
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (err && errlen)
        snprintf(err, errlen, "state directory %s %s; %s", path, why, fix);
    errno = e;
    return -1;
}

/* fd is a directory that is ours and that no one else can write into (strict: mode 0700). */
static int check_dir(int fd, const char *path, int strict, const char *fix, char *err,
                     size_t errlen)
{
    struct stat sb;
    uid_t me = geteuid();

    if (fstat(fd, &sb) != 0)
        return refuse(err, errlen, errno, path, fix, "cannot be examined (%s)", strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return refuse(err, errlen, ENOTDIR, path, fix, "is not a directory");
    if (sb.st_uid != me)
        return refuse(err, errlen, EPERM, path, fix, "is owned by uid %u, not by you (uid %u)",
                      (unsigned)sb.st_uid, (unsigned)me);
    if (sb.st_mode & (S_IWGRP | S_IWOTH))
        return refuse(err, errlen, EPERM, path, fix, "is writable by others (mode %04o)",
                      (unsigned)(sb.st_mode & 07777));
    if (strict && (sb.st_mode & (S_IRWXG | S_IRWXO)))
        return refuse(err, errlen, EPERM, path, fix,
                      "is open to others (mode %04o, not 0700) and would hold private keys",
                      (unsigned)(sb.st_mode & 07777));
    return 0;
}

/* Open name (under dirfd) as a directory, never through a symbolic link, creating it 0700
 * first when create is set, and check it; shown is its name in messages. The descriptor,
 * or -1. */
static int open_checked_dir(int dirfd, const char *name, const char *shown, int create,
                            int strict, const char *fix, char *err, size_t errlen)
{
    int created = 0, fd;

    if (create) {
        if (mkdirat(dirfd, name, 0700) == 0)
            created = 1;
        else if (errno != EEXIST)
            return refuse(err, errlen, errno, shown, fix, "cannot be created (%s)",
                          strerror(errno));
        /* EEXIST: whatever is there is examined below, like any directory we did not make. */
    }
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        struct stat lsb;
        int e = errno;

        if (e == ENOENT) {
            if (err && errlen)
                snprintf(err, errlen, "state directory %s does not exist", shown);
            errno = ENOENT;
            return -1;
        }
        if ((e == ELOOP || e == ENOTDIR) && fstatat(dirfd, name, &lsb, AT_SYMLINK_NOFOLLOW) == 0)
            return refuse(err, errlen, e, shown, fix, "%s",
                          S_ISLNK(lsb.st_mode) ? "is a symbolic link" : "is not a directory");
        return refuse(err, errlen, e, shown, fix, "cannot be opened (%s)", strerror(e));
    }
    /* mkdir's mode went through the umask: make it exactly 0700, once it is surely ours. */
    if (created && check_dir(fd, shown, 0, fix, err, errlen) == 0 && fchmod(fd, 0700) != 0) {
        int e = errno;

        close(fd);
        return refuse(err, errlen, e, shown, fix, "cannot be made 0700 (%s)", strerror(e));
    }
    if (check_dir(fd, shown, strict, fix, err, errlen) != 0) {
        int e = errno;

        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int dq_stack_dir_open(int create, char **path, char *err, size_t errlen)
{
    char buf[4096];
    int strict, fd;

    if (path)
        *path = NULL;
    if (state_dir_path(buf, sizeof buf, &strict) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "the state directory's name is too long");
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open_checked_dir(AT_FDCWD, buf, buf, create, strict, strict ? FIX_DEFAULT : FIX_ENV,
                          err, errlen);
    if (fd >= 0 && path && !(*path = strdup(buf))) {
        close(fd);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    return fd;
}

char *dq_stack_dir(int create)
{
    char *path = NULL, err[8];
    int fd = dq_stack_dir_open(create, &path, err, sizeof err);

    if (fd < 0)
        return NULL;
    close(fd);
    return path;
}

int dq_stack_subdir(int dirfd, const char *name, const char *shown, char *err, size_t errlen)
{
    return open_checked_dir(dirfd, name, shown, 1, 0, FIX_SUBDIR, err, errlen);
}

int dq_stack_open_file(int dirfd, const char *name, int flags)
{
    struct stat sb;
    int fd = openat(dirfd, name, flags | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    int e;

    if (fd < 0)
        return -1;
    if (fstat(fd, &sb) != 0)
        e = errno;
    else if (!S_ISREG(sb.st_mode))
        e = EINVAL;
    else if (sb.st_uid != geteuid())
        e = EPERM;
    else
        return fd;
    close(fd);
    errno = e;
    return -1;
}

int dq_stack_replace_file(int dirfd, const char *name, const void *data, size_t len)
{
    char tmp[4200];
    const char *p = data;
    int fd, e;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", name, (long)getpid()) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    /* A leftover of a crashed process that had our pid; ours to remove, never to reuse. */
    unlinkat(dirfd, tmp, 0);
    fd = dq_stack_open_file(dirfd, tmp, O_CREAT | O_EXCL);
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0)
            errno = EIO;
        if (w <= 0)
            goto fail;
        p += w;
        len -= (size_t)w;
    }
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    /* rename() makes the file appear whole or not at all to a concurrent reader. */
    if (renameat(dirfd, tmp, dirfd, name) == 0)
        return 0;
fail:
    e = errno;
    if (fd >= 0)
        close(fd);
    unlinkat(dirfd, tmp, 0);
    errno = e;
    return -1;
}

static char *dup_member(const cJSON *obj, const char *name)
{
    const char *s = dq_json_str(obj, name);
    return s ? strdup(s) : NULL;
}

/* stack.json under dirfd, read without following a symbolic link. malloc'd, or NULL. */
static char *read_stack_file(int dirfd, size_t *len)
{
    struct stat sb;
    char *buf = NULL;
    size_t got = 0;
    int fd = openat(dirfd, STACK_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid())
        goto out;
    buf = malloc(STACK_FILE_MAX + 1);
    while (buf && got < STACK_FILE_MAX) {
        ssize_t r = read(fd, buf + got, STACK_FILE_MAX - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            buf = NULL;
        }
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (buf) {
        buf[got] = '\0';
        *len = got;
    }
out:
    close(fd);
    return buf;
}

dq_stack *dq_stack_find(void)
{
    char err[8];
    int dirfd = dq_stack_dir_open(0, NULL, err, sizeof err);
    char *text = NULL;
    size_t len = 0;
    cJSON *root;
    dq_stack *s = NULL;

    /* No directory, or one that is refused: its stack.json could name anyone's broker,
     * configuration and keys, so it is not read at all. */
    if (dirfd < 0)
        return NULL;
    text = read_stack_file(dirfd, &len);
    close(dirfd);
    if (!text)
        return NULL;
    root = dq_json_parse(text, len, STACK_FILE_MAX, 8, NULL, NULL, 0);
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
        s->broker_started = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "broker_started"));
        s->redis_started = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "redis_started"));
        s->redis_pid = (pid_t)dq_json_num(root, "redis_pid", 0);
        s->data_dir = dup_member(root, "data_dir");
    }
    cJSON_Delete(root);
    /* A stack whose process is gone left a stale file behind: not a stack. */
    if (s && (s->pid <= 0 || (kill(s->pid, 0) != 0 && errno == ESRCH))) {
        dq_stack_free(s);
        return NULL;
    }
    return s;
}

int dq_stack_write(int dirfd, const dq_stack *s)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    int rc = -1;

    if (!root)
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
    cJSON_AddBoolToObject(root, "broker_started", s->broker_started);
    cJSON_AddBoolToObject(root, "redis_started", s->redis_started);
    if (s->redis_started && s->redis_pid > 0)
        cJSON_AddNumberToObject(root, "redis_pid", s->redis_pid);
    if (s->data_dir)
        cJSON_AddStringToObject(root, "data_dir", s->data_dir);
    text = cJSON_Print(root);
    if (!text) {
        errno = ENOMEM;
        goto out;
    }
    {
        size_t n = strlen(text);
        char *line = realloc(text, n + 2);

        if (!line) {
            errno = ENOMEM;
            goto out;
        }
        text = line;
        text[n] = '\n';
        text[n + 1] = '\0';
        rc = dq_stack_replace_file(dirfd, STACK_FILE, text, n + 1);
    }
out:
    free(text);
    cJSON_Delete(root);
    return rc;
}

void dq_stack_remove(int dirfd)
{
    unlinkat(dirfd, STACK_FILE, 0);
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
    free(s->data_dir);
    free(s);
}
