/* faultfs: an LD_PRELOAD shim that makes storage calls fail on demand, without root.
 *
 * FAULTFS_CTL names a control file holding one line:
 *     <ops> <path-substring> <errno> <skip> <count>
 * e.g. "fsync tenant.db-wal 5 0 2": the first 2 fsync/fdatasync calls on a file whose path
 * contains "tenant.db-wal" fail with EIO. <ops> is a comma-separated list of write (write,
 * pwrite, pwrite64, writev, pwritev), fsync (fsync, fdatasync of a file), dirsync (fsync,
 * fdatasync of a directory) and rename (rename, renameat, renameat2). A pattern ending in '$'
 * matches the end of the path only ("tenant.db$": the database file, not its -wal). A missing
 * or empty file injects nothing. The file is re-read when it
 * changes (counters restart); the number of faults injected so far is written to
 * "<FAULTFS_CTL>.fired" after each one.
 *
 * Built by tests/faults.rs with `cc -shared -fPIC`. Test code, not shipped.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_WRITE = 1, OP_FSYNC = 2, OP_RENAME = 4, OP_DIRSYNC = 8 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec ctl_mtime;
static ino_t ctl_ino;
static off_t ctl_size = -1;
static int ops, err, skip, count, hits, fired;
static char pattern[512];

static ssize_t (*real_write)(int, const void *, size_t);

static void load(const char *ctl) {
    ops = 0;
    hits = 0;
    fired = 0;
    FILE *f = fopen(ctl, "r");
    if (!f) return;
    char opnames[128] = {0};
    if (fscanf(f, "%127s %511s %d %d %d", opnames, pattern, &err, &skip, &count) == 5) {
        if (strstr(opnames, "write")) ops |= OP_WRITE;
        if (strstr(opnames, "fsync")) ops |= OP_FSYNC;
        if (strstr(opnames, "rename")) ops |= OP_RENAME;
        if (strstr(opnames, "dirsync")) ops |= OP_DIRSYNC;
    }
    fclose(f);
}

static void record(const char *ctl) {
    char path[4096];
    char buf[32];
    snprintf(path, sizeof path, "%s.fired", ctl);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return;
    if (!real_write) real_write = dlsym(RTLD_NEXT, "write");
    int n = snprintf(buf, sizeof buf, "%d\n", fired);
    real_write(fd, buf, n);
    close(fd);
}

/* Whether path matches the pattern: a substring, or with a trailing '$' a suffix. */
static int matches(const char *path) {
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '$') {
        size_t len = strlen(path);
        return len >= n - 1 && strncmp(path + len - (n - 1), pattern, n - 1) == 0;
    }
    return strstr(path, pattern) != NULL;
}

/* Whether this call (op on path) must fail; sets errno when it must. */
static int should_fail(int op, const char *path) {
    const char *ctl = getenv("FAULTFS_CTL");
    if (!ctl || !path) return 0;
    int fail = 0;
    pthread_mutex_lock(&lock);
    struct stat st;
    if (stat(ctl, &st) != 0) {
        ops = 0;
        ctl_size = -1;
    } else if (st.st_ino != ctl_ino || st.st_size != ctl_size ||
               st.st_mtim.tv_sec != ctl_mtime.tv_sec || st.st_mtim.tv_nsec != ctl_mtime.tv_nsec) {
        ctl_ino = st.st_ino;
        ctl_size = st.st_size;
        ctl_mtime = st.st_mtim;
        load(ctl);
    }
    if ((ops & op) && matches(path)) {
        hits++;
        if (hits > skip && hits <= skip + count) {
            fail = 1;
            fired++;
            record(ctl);
        }
    }
    pthread_mutex_unlock(&lock);
    if (fail) errno = err;
    return fail;
}

static int fd_fails(int op, int fd) {
    const char *ctl = getenv("FAULTFS_CTL");
    if (!ctl || fd < 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return should_fail(op, path);
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*sync_fn)(int);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*renameat_fn)(int, const char *, int, const char *);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned);

#define REAL(name, type) \
    static type real; \
    if (!real) real = (type)dlsym(RTLD_NEXT, name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL("write", write_fn);
    if (fd > 2 && fd_fails(OP_WRITE, fd)) return -1;
    return real(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL("pwrite", pwrite_fn);
    if (fd_fails(OP_WRITE, fd)) return -1;
    return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL("pwrite64", pwrite_fn);
    if (fd_fails(OP_WRITE, fd)) return -1;
    return real(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL("writev", writev_fn);
    if (fd > 2 && fd_fails(OP_WRITE, fd)) return -1;
    return real(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL("pwritev", pwritev_fn);
    if (fd_fails(OP_WRITE, fd)) return -1;
    return real(fd, iov, cnt, off);
}

/* fsync of a directory (making a rename durable) or of a file. */
static int sync_op(int fd) {
    struct stat st;
    return (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) ? OP_DIRSYNC : OP_FSYNC;
}

int fsync(int fd) {
    REAL("fsync", sync_fn);
    if (fd_fails(sync_op(fd), fd)) return -1;
    return real(fd);
}

int fdatasync(int fd) {
    REAL("fdatasync", sync_fn);
    if (fd_fails(sync_op(fd), fd)) return -1;
    return real(fd);
}

int rename(const char *from, const char *to) {
    REAL("rename", rename_fn);
    if (should_fail(OP_RENAME, to)) return -1;
    return real(from, to);
}

int renameat(int dfd, const char *from, int tfd, const char *to) {
    REAL("renameat", renameat_fn);
    if (should_fail(OP_RENAME, to)) return -1;
    return real(dfd, from, tfd, to);
}

int renameat2(int dfd, const char *from, int tfd, const char *to, unsigned flags) {
    REAL("renameat2", renameat2_fn);
    if (should_fail(OP_RENAME, to)) return -1;
    return real(dfd, from, tfd, to, flags);
}
