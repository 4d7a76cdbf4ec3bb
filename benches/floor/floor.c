/*
 * floor.c - the "floor" cost of storing email filings durably, with no database and no MIME
 * parsing, to set beside the service's filings/s on the same machine.
 *
 * Build: gcc -O2 -Wall -Wextra -pthread -o /tmp/floor benches/floor/floor.c -lcrypto
 * Run:   d=/floor-$(date +%s%N); mkdir "$d"; /tmp/floor "$d"; rm -rf "$d"
 *
 * Before timing: N distinct synthetic messages (~50 KB each: ~1.5 KB of headers and text plus
 * one ~35,000-byte random attachment as MIME base64, 76-char lines, CRLF), from a seeded PRNG.
 * The offsets of the attachment's base64 are remembered, so nothing is parsed while timed.
 *
 * Timed, T worker threads take messages from a shared counter; per message:
 *   1. base64-decode the attachment lines (CR/LF skipped) into bytes;
 *   2. SHA-256 of the raw message and of the decoded attachment;
 *   3. AES-256-GCM of each blob, fixed 32-byte key, random 12-byte nonce: nonce||ct||tag;
 *   4. per blob, stored as <dir>/<aa>/<64 hex of the plaintext SHA-256> as the service's
 *      local store does: shard dir made on demand (mode 0700, root fsynced when it was new),
 *      temp file in the shard (O_CREAT|O_EXCL, 0600, fchmod 0600), write, fsync(file),
 *      rename, open+fsync(shard dir).
 * Two new files per message, each with fsync(file) + fsync(dir).
 *
 * After timing (untimed): every blob's file is present with the sealed size, and message 0's
 * raw blob is read back and decrypted (GCM tag checked) to the original bytes.
 *
 * Environment: FLOOR_MESSAGES (3000), FLOOR_THREADS (8), FLOOR_SEED (1).
 * Writes only under argv[1] and deletes nothing (a temp file is removed only if its own write
 * failed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define ATT_BYTES 35000
#define TEXT_BYTES 1500
#define NONCE_LEN 12
#define TAG_LEN 16
#define MAX_ROOT 3800

struct msg {
    unsigned char *raw;
    size_t len;
    size_t b64_start, b64_end; /* the attachment's base64 lines, CRLFs included */
};

static struct msg *msgs;
static double *lat_ms;
static size_t n_msgs;
static const char *root;
static int root_len;
static atomic_size_t next_msg;
static atomic_int failed;
static EVP_MD *md_sha256;
static EVP_CIPHER *aes_gcm;
static const unsigned char KEY[32] = {
    0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d, 0x77, 0x81,
    0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61, 0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4,
};

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void die_ssl(const char *what) {
    fprintf(stderr, "floor: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t env_size(const char *name, size_t dflt) {
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x == 0) {
        fprintf(stderr, "floor: %s must be a positive integer\n", name);
        exit(2);
    }
    return (size_t)x;
}

/* ---------- synthetic messages (untimed) ---------- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *s, size_t n) {
    if (b->len + n > b->cap) {
        while (b->len + n > b->cap)
            b->cap = b->cap ? b->cap * 2 : 65536;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("realloc");
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* MIME base64 of src: 76-char lines, each ended by CRLF. */
static void put_base64(struct buf *b, const unsigned char *src, size_t n) {
    char line[80];
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)src[i + 1] << 8;
        if (i + 2 < n)
            v |= src[i + 2];
        line[col++] = B64[(v >> 18) & 63];
        line[col++] = B64[(v >> 12) & 63];
        line[col++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        line[col++] = i + 2 < n ? B64[v & 63] : '=';
        if (col == 76) {
            line[col++] = '\r';
            line[col++] = '\n';
            put(b, line, col);
            col = 0;
        }
    }
    if (col) {
        line[col++] = '\r';
        line[col++] = '\n';
        put(b, line, col);
    }
}

static const char *WORDS[] = {
    "filing", "matter", "court", "deadline", "exhibit", "review", "counsel", "motion",
    "please", "attached", "the", "and", "for", "with", "draft", "signed",
    "client", "agreement", "schedule", "hearing", "thanks", "regards", "update", "record",
};

static void make_msg(struct msg *m, size_t i, uint64_t seed, unsigned char *att) {
    uint64_t s = seed * 0x100000001b3ULL ^ (uint64_t)i;
    splitmix64(&s);
    struct buf b = {0};
    char h[512];
    snprintf(h, sizeof h,
             "From: Sender %zu <sender%zu@example.com>\r\n"
             "To: Docket <file@docket.example.com>\r\n"
             "Subject: Floor benchmark message %zu\r\n"
             "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
             "Message-ID: <floor-%zu-%016" PRIx64 "@example.com>\r\n"
             "MIME-Version: 1.0\r\n"
             "Content-Type: multipart/mixed; boundary=\"floor-boundary-%zu\"\r\n"
             "\r\n"
             "--floor-boundary-%zu\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 7bit\r\n"
             "\r\n",
             i, i, i, i, splitmix64(&s), i, i);
    puts_(&b, h);
    /* Text so that headers + body come to about TEXT_BYTES. */
    size_t col = 0;
    while (b.len < TEXT_BYTES - 200) {
        const char *w = WORDS[splitmix64(&s) % (sizeof WORDS / sizeof *WORDS)];
        size_t wl = strlen(w);
        if (col + wl + 1 > 72) {
            puts_(&b, "\r\n");
            col = 0;
        } else if (col) {
            puts_(&b, " ");
            col++;
        }
        put(&b, w, wl);
        col += wl;
    }
    snprintf(h, sizeof h,
             "\r\n\r\n"
             "--floor-boundary-%zu\r\n"
             "Content-Type: application/octet-stream\r\n"
             "Content-Disposition: attachment; filename=\"exhibit-%zu.bin\"\r\n"
             "Content-Transfer-Encoding: base64\r\n"
             "\r\n",
             i, i);
    puts_(&b, h);
    for (size_t k = 0; k < ATT_BYTES; k += 8) {
        uint64_t r = splitmix64(&s);
        size_t n = ATT_BYTES - k < 8 ? ATT_BYTES - k : 8;
        memcpy(att + k, &r, n);
    }
    m->b64_start = b.len;
    put_base64(&b, att, ATT_BYTES);
    m->b64_end = b.len;
    snprintf(h, sizeof h, "--floor-boundary-%zu--\r\n", i);
    puts_(&b, h);
    m->raw = b.p;
    m->len = b.len;
}

/* ---------- per-filing work (timed) ---------- */

static signed char DEC[256];

static void init_dec(void) {
    memset(DEC, -1, sizeof DEC);
    for (int i = 0; i < 64; i++)
        DEC[(unsigned char)B64[i]] = (signed char)i;
}

/* Decodes base64 in src[0..n), skipping CR and LF; returns the byte count or -1. */
static long b64_decode(const unsigned char *src, size_t n, unsigned char *out) {
    uint32_t acc = 0;
    int have = 0, pad = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = src[i];
        if (c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad || DEC[c] < 0)
            return -1; /* data after padding, or not base64 */
        acc = (acc << 6) | (uint32_t)DEC[c];
        if (++have == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
            have = 0;
        }
    }
    if (have + pad != 0 && have + pad != 4)
        return -1;
    if (have == 3) {
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    } else if (have == 2) {
        out[o++] = (unsigned char)(acc >> 4);
    } else if (have == 1) {
        return -1;
    }
    return (long)o;
}

static void sha256(const unsigned char *p, size_t n, unsigned char md[32]) {
    unsigned int mdlen = 0;
    if (!EVP_Digest(p, n, md, &mdlen, md_sha256, NULL) || mdlen != 32)
        die_ssl("SHA-256");
}

/* out = nonce || ciphertext || tag; returns its length. */
static size_t seal(EVP_CIPHER_CTX *ctx, const unsigned char *p, size_t n, unsigned char *out) {
    int len = 0, fin = 0;
    if (RAND_bytes(out, NONCE_LEN) != 1)
        die_ssl("RAND_bytes");
    if (!EVP_EncryptInit_ex2(ctx, aes_gcm, KEY, out, NULL) ||
        !EVP_EncryptUpdate(ctx, out + NONCE_LEN, &len, p, (int)n) ||
        !EVP_EncryptFinal_ex(ctx, out + NONCE_LEN + len, &fin) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + NONCE_LEN + len + fin))
        die_ssl("AES-256-GCM");
    return NONCE_LEN + (size_t)len + (size_t)fin + TAG_LEN;
}

static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

static void hex(const unsigned char md[32], char out[65]) {
    static const char X[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = X[md[i] >> 4];
        out[2 * i + 1] = X[md[i] & 15];
    }
    out[64] = 0;
}

/* Durably stores blob p[0..n) as <root>/<aa>/<hex>; 0 on success, -1 (errno set) otherwise. */
static int store(const char *id, const unsigned char *p, size_t n, unsigned tid, uint64_t *ctr) {
    char dir[4096], tmp[4096], path[4096];
    /* main() keeps root under MAX_ROOT characters, so none of these is truncated. */
    snprintf(dir, sizeof dir, "%.3800s/%.2s", root, id);
    snprintf(path, sizeof path, "%.3800s/%.2s/%.64s", root, id, id);
    snprintf(tmp, sizeof tmp, "%.3800s/%.2s/.tmp-%ld-%u-%" PRIu64, root, id, (long)getpid(), tid,
             (*ctr)++);

    int new_shard = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mkdir(dir, 0700) == 0) {
            new_shard = 1;
            if (chmod(dir, 0700) != 0)
                return -1;
        } else if (errno != EEXIST) {
            return -1;
        }
    }

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int ok = fchmod(fd, 0600) == 0; /* whatever the umask */
    for (size_t off = 0; ok && off < n;) {
        ssize_t w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            ok = 0;
        else
            off += (size_t)w;
    }
    ok = ok && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        e = errno;
        unlink(tmp); /* our own temp file, inside root */
        errno = e;
        return -1;
    }
    if (fsync_path(dir) != 0)
        return -1;
    if (new_shard && fsync_path(root) != 0)
        return -1;
    return 0;
}

static void *worker(void *arg) {
    unsigned tid = (unsigned)(uintptr_t)arg;
    size_t max_raw = 0;
    for (size_t i = 0; i < n_msgs; i++)
        if (msgs[i].len > max_raw)
            max_raw = msgs[i].len;
    unsigned char *att = malloc(ATT_BYTES + 16);
    unsigned char *sealed = malloc(max_raw + NONCE_LEN + TAG_LEN + 16);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!att || !sealed || !ctx)
        die("alloc");
    uint64_t ctr = 0;
    for (;;) {
        size_t i = atomic_fetch_add(&next_msg, 1);
        if (i >= n_msgs || atomic_load(&failed))
            break;
        const struct msg *m = &msgs[i];
        double t0 = now_s();

        long alen = b64_decode(m->raw + m->b64_start, m->b64_end - m->b64_start, att);
        if (alen != ATT_BYTES) {
            fprintf(stderr, "floor: message %zu: bad attachment base64 (%ld bytes)\n", i, alen);
            atomic_store(&failed, 1);
            break;
        }
        unsigned char md_raw[32], md_att[32];
        sha256(m->raw, m->len, md_raw);
        sha256(att, (size_t)alen, md_att);
        char id_raw[65], id_att[65];
        hex(md_raw, id_raw);
        hex(md_att, id_att);

        size_t n = seal(ctx, m->raw, m->len, sealed);
        if (store(id_raw, sealed, n, tid, &ctr) != 0) {
            fprintf(stderr, "floor: message %zu: storing raw blob: %s\n", i, strerror(errno));
            atomic_store(&failed, 1);
            break;
        }
        n = seal(ctx, att, (size_t)alen, sealed);
        if (store(id_att, sealed, n, tid, &ctr) != 0) {
            fprintf(stderr, "floor: message %zu: storing attachment: %s\n", i, strerror(errno));
            atomic_store(&failed, 1);
            break;
        }
        lat_ms[i] = (now_s() - t0) * 1000.0;
    }
    EVP_CIPHER_CTX_free(ctx);
    free(sealed);
    free(att);
    return NULL;
}

/* Untimed check: reads the blob stored for message 0's raw bytes back and opens it. */
static int open_check(const struct msg *m) {
    unsigned char md[32];
    char id[65], path[4096];
    sha256(m->raw, m->len, md);
    hex(md, id);
    snprintf(path, sizeof path, "%.3800s/%.2s/%.64s", root, id, id);
    size_t n = m->len + NONCE_LEN + TAG_LEN;
    unsigned char *b = malloc(n), *pt = malloc(m->len + 16);
    FILE *f = fopen(path, "rb");
    int ok = b && pt && f && fread(b, 1, n, f) == n;
    if (f)
        fclose(f);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    ok = ok && ctx && EVP_DecryptInit_ex2(ctx, aes_gcm, KEY, b, NULL) &&
         EVP_DecryptUpdate(ctx, pt, &len, b + NONCE_LEN, (int)m->len) &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, b + NONCE_LEN + m->len) &&
         EVP_DecryptFinal_ex(ctx, pt + len, &fin) > 0 && (size_t)(len + fin) == m->len &&
         memcmp(pt, m->raw, m->len) == 0;
    EVP_CIPHER_CTX_free(ctx);
    free(b);
    free(pt);
    return ok;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double p) {
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR   (an existing, preferably fresh, directory)\n", argv[0]);
        return 2;
    }
    root = argv[1];
    root_len = (int)strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/')
        root_len--;
    if (root_len > MAX_ROOT) {
        fprintf(stderr, "floor: data dir path longer than %d characters\n", MAX_ROOT);
        return 2;
    }
    root = strndup(root, (size_t)root_len);
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "floor: %s is not an existing directory\n", argv[1]);
        return 2;
    }
    n_msgs = env_size("FLOOR_MESSAGES", 3000);
    size_t threads = env_size("FLOOR_THREADS", 8);
    uint64_t seed = env_size("FLOOR_SEED", 1);

    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (!md_sha256 || !aes_gcm)
        die_ssl("EVP fetch");
    init_dec();

    /* Untimed: build the messages, and check the decoder against message 0's attachment. */
    double tp = now_s();
    msgs = calloc(n_msgs, sizeof *msgs);
    lat_ms = calloc(n_msgs, sizeof *lat_ms);
    unsigned char *att0 = malloc(ATT_BYTES), *att = malloc(ATT_BYTES + 16), *dec = malloc(ATT_BYTES + 16);
    if (!msgs || !lat_ms || !att0 || !att || !dec)
        die("alloc");
    size_t total = 0;
    for (size_t i = 0; i < n_msgs; i++) {
        make_msg(&msgs[i], i, seed, i == 0 ? att0 : att);
        total += msgs[i].len;
    }
    if (b64_decode(msgs[0].raw + msgs[0].b64_start, msgs[0].b64_end - msgs[0].b64_start, dec) != ATT_BYTES ||
        memcmp(dec, att0, ATT_BYTES) != 0) {
        fprintf(stderr, "floor: base64 self-check failed\n");
        return 1;
    }
    free(att0);
    free(att);
    free(dec);
    fprintf(stderr, "floor: prepared %zu messages, %.1f KB average, in %.2f s\n", n_msgs,
            (double)total / (double)n_msgs / 1000.0, now_s() - tp);

    /* Timed. */
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (!tids)
        die("alloc");
    double t0 = now_s();
    for (size_t t = 0; t < threads; t++) {
        int e = pthread_create(&tids[t], NULL, worker, (void *)(uintptr_t)t);
        if (e) {
            errno = e;
            die("pthread_create");
        }
    }
    for (size_t t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    double wall = now_s() - t0;
    if (atomic_load(&failed))
        return 1;

    /* Untimed: every blob is there, sealed size = plaintext + 28. */
    size_t present = 0;
    unsigned char *a = malloc(ATT_BYTES + 16);
    for (size_t i = 0; i < n_msgs && a; i++) {
        unsigned char md[32];
        char id[65], path[4096];
        sha256(msgs[i].raw, msgs[i].len, md);
        hex(md, id);
        snprintf(path, sizeof path, "%.3800s/%.2s/%.64s", root, id, id);
        present += stat(path, &st) == 0 && (size_t)st.st_size == msgs[i].len + NONCE_LEN + TAG_LEN;
        long n = b64_decode(msgs[i].raw + msgs[i].b64_start, msgs[i].b64_end - msgs[i].b64_start, a);
        sha256(a, (size_t)n, md);
        hex(md, id);
        snprintf(path, sizeof path, "%.3800s/%.2s/%.64s", root, id, id);
        present += stat(path, &st) == 0 && (size_t)st.st_size == (size_t)n + NONCE_LEN + TAG_LEN;
    }
    free(a);
    if (!open_check(&msgs[0])) {
        fprintf(stderr, "floor: message 0's stored blob does not decrypt to the message\n");
        return 1;
    }
    if (present != 2 * n_msgs) {
        fprintf(stderr, "floor: only %zu of %zu blobs found after the run\n", present, 2 * n_msgs);
        return 1;
    }

    qsort(lat_ms, n_msgs, sizeof *lat_ms, cmp_double);
    double mean = 0;
    for (size_t i = 0; i < n_msgs; i++)
        mean += lat_ms[i];
    mean /= (double)n_msgs;
    double rate = (double)n_msgs / wall, p50 = pct(lat_ms, n_msgs, 50), p99 = pct(lat_ms, n_msgs, 99);
    double mb = (double)total / 1e6;

    printf("messages      %zu (%.1f MB raw, %zu blob files, all present, message 0 decrypted back)\n", n_msgs, mb, 2 * n_msgs);
    printf("threads       %zu\n", threads);
    printf("wall          %.3f s\n", wall);
    printf("messages/s    %.1f\n", rate);
    printf("latency ms    p50 %.3f  p99 %.3f  mean %.3f  max %.3f\n", p50, p99, mean, lat_ms[n_msgs - 1]);
    printf("FLOOR_JSON {\"messages\":%zu,\"threads\":%zu,\"wall_s\":%.3f,\"messages_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"mean_ms\":%.3f,\"max_ms\":%.3f,\"raw_mb\":%.1f,"
           "\"files\":%zu}\n",
           n_msgs, threads, wall, rate, p50, p99, mean, lat_ms[n_msgs - 1], mb, 2 * n_msgs);
    return 0;
}
