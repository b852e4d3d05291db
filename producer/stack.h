/*
 * stack.h - the running `deployq up` stack, found through a small JSON state file, and the
 * state directory that holds it.
 *
 * `deployq up` writes <state dir>/stack.json with its pid, the broker's bootstrap
 * address, the Redis URL, the configuration file, the CI key it generated, whether it
 * started the broker and the redis-server itself (or uses existing ones, which it never
 * stops) and its --data directory; any later
 * `deployq` finds it without flags. The state dir is $DEPLOYQ_STATE_DIR, else
 * $XDG_RUNTIME_DIR/deployq, else /tmp/deployq-<uid>. A file whose pid is gone is stale
 * and ignored.
 *
 * The state directory holds private keys and files other processes trust, and its default
 * name in /tmp can be created by anyone first. So it is only used when it is a real
 * directory (not a symbolic link), owned by this user and writable by nobody else; the two
 * default locations, which only deployq creates, must moreover be exactly 0700 (a
 * $DEPLOYQ_STATE_DIR the user made with mkdir may be readable by others: every file
 * deployq puts in it is 0600). A directory deployq creates is made 0700. Checks are made
 * on a descriptor opened with O_DIRECTORY|O_NOFOLLOW, and files are created under that
 * descriptor with O_NOFOLLOW, so a path swapped after the check is never followed.
 */
#ifndef DQ_STACK_H
#define DQ_STACK_H

#include <stddef.h>
#include <sys/types.h>

typedef struct dq_stack {
    pid_t pid;
    char *brokers;
    char *redis_url;
    char *config_path;
    char *ci_key_path;
    char *ci_key_id;
    char *approver_key_path;
    /* What `up` started, and so stops (and what it found running, and leaves alone). */
    int broker_started; /* 1: the embedded broker; 0: an existing Kafka (--brokers) */
    int redis_started;  /* 1: a redis-server of its own, redis_pid; 0: an existing Redis */
    pid_t redis_pid;
    char *data_dir;     /* --data DIR, or NULL: nothing is kept across restarts */
} dq_stack;

/* Open the state directory, creating it 0700 first when create is set and it does not
 * exist, and check it as described above. Returns an O_DIRECTORY|O_CLOEXEC descriptor the
 * caller closes, and its path in *path (malloc'd, the caller frees) when path is not NULL.
 * On refusal returns -1 with errno set and one line in err that says why and what to do,
 * e.g. "state directory /tmp/deployq-1000 is owned by uid 65534, not by you (uid 1000);
 * remove it or set DEPLOYQ_STATE_DIR to a directory of your own". Never prints. */
int dq_stack_dir_open(int create, char **path, char *err, size_t errlen);
/* The checked state directory's path (malloc'd), or NULL with errno set when it does not
 * exist (and create is 0) or is refused (dq_stack_dir_open says why). Never prints. */
char *dq_stack_dir(int create);
/* The subdirectory name of dirfd (e.g. "logs"), created 0700 when missing, else checked
 * like the state directory (a real directory of ours that no one else can write); shown is
 * its path in messages. Returns its descriptor, or -1 with errno and a line in err. */
int dq_stack_subdir(int dirfd, const char *name, const char *shown, char *err, size_t errlen);
/* Open name under dirfd (AT_FDCWD: a path) for writing with flags (O_CREAT, O_EXCL,
 * O_APPEND, O_TRUNC), never through a symbolic link, mode 0600 when created, close-on-exec.
 * Only a regular file owned by this user is returned; -1 with errno otherwise (ELOOP for a
 * symbolic link, EPERM for a file of someone else's, EINVAL for a non-regular file). */
int dq_stack_open_file(int dirfd, const char *name, int flags);
/* Replace name under dirfd with the len bytes of data: written to a fresh temporary file
 * (O_EXCL|O_NOFOLLOW, 0600) in the same directory, then renamed over name, so a reader sees
 * the old or the new file whole and a symbolic link at name is replaced, never followed.
 * 0 ok, -1 with errno (the temporary file is removed). */
int dq_stack_replace_file(int dirfd, const char *name, const void *data, size_t len);

/* The running stack, or NULL when none (or its process is gone, or the state directory is
 * refused: a stack.json in a directory someone else controls is never believed). */
dq_stack *dq_stack_find(void);
/* Write stack.json under the state directory dirfd (dq_stack_dir_open) atomically.
 * 0 ok, -1 (errno). */
int dq_stack_write(int dirfd, const dq_stack *s);
/* Remove stack.json under the state directory dirfd. */
void dq_stack_remove(int dirfd);
void dq_stack_free(dq_stack *s);

#endif
