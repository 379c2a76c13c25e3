/* util/atomic_file.c: write to PATH.tmp, then fsync and rename (see atomic_file.h). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "error.h"
#include "file.h"

void zen_sync_parent(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

int zen_atomic_tmp_name(const char *path, char **out) {
    struct stat st;
    *out = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return zen_fail(ZEN_ERR_INPUT, "%s is a directory; give a file name", path);
    size_t n = strlen(path) + 5;
    if (!(*out = zen_malloc(n))) return ZEN_ERR_INTERNAL;
    snprintf(*out, n, "%s.tmp", path);
    return 0;
}

int zen_atomic_open(zen_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int rc = zen_atomic_tmp_name(path, &f->tmp);
    if (rc || (rc = zen_mkdir_parents(path))) {
        free(f->tmp);
        f->tmp = NULL;
        return rc;
    }
    f->path = strdup(path);
    if (!f->path) {
        zen_atomic_abort(f);
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    }
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot write: %s", f->tmp, strerror(errno));
        free(f->tmp);
        f->tmp = NULL; /* nothing was created: nothing to remove */
        zen_atomic_abort(f);
        return rc;
    }
    return 0;
}

int zen_atomic_write(zen_atomic_file *f, const void *data, size_t n) {
    if (!f->fp) return zen_fail(ZEN_ERR_INTERNAL, "%s: write after close", f->path);
    if (n && fwrite(data, 1, n, f->fp) != n)
        return zen_fail(ZEN_ERR_INTERNAL, "%s: write failed: %s", f->path, strerror(errno));
    return 0;
}

int zen_atomic_commit_path(const char *tmp, const char *path) {
    int fd = open(tmp, O_RDONLY);
    int ok = fd >= 0 && fsync(fd) == 0;
    int err = errno;
    if (fd >= 0) close(fd);
    if (!ok) {
        remove(tmp);
        return zen_fail(ZEN_ERR_INTERNAL, "%s: cannot write to disk: %s", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        return zen_fail(err == EISDIR || err == ENOTDIR ? ZEN_ERR_INPUT : ZEN_ERR_INTERNAL,
                        "%s: cannot rename into place: %s", path, strerror(err));
    }
    zen_sync_parent(path);
    return 0;
}

int zen_atomic_commit(zen_atomic_file *f) {
    if (!f->fp) {
        zen_atomic_abort(f);
        return zen_fail(ZEN_ERR_INTERNAL, "commit of a file that is not open");
    }
    errno = 0;
    int ok = fflush(f->fp) == 0 && !ferror(f->fp) && fsync(fileno(f->fp)) == 0;
    int err = errno;
    if (fclose(f->fp) != 0 && ok) { /* closed once, whatever happened */
        ok = 0;
        err = errno;
    }
    f->fp = NULL;
    int rc = ok ? zen_atomic_commit_path(f->tmp, f->path)
                : zen_fail(ZEN_ERR_INTERNAL, "%s: write failed: %s", f->path, strerror(err ? err : EIO));
    if (!rc) {
        free(f->tmp);
        f->tmp = NULL; /* renamed: nothing left to remove */
    }
    zen_atomic_abort(f);
    return rc;
}

void zen_atomic_abort(zen_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp) remove(f->tmp);
    free(f->tmp);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* 1 if path is a directory with nothing in it */
static int empty_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

int zen_atomic_dir_begin(const char *path, char **partial) {
    *partial = NULL;
    struct stat st;
    if (stat(path, &st) == 0 && !empty_dir(path))
        return zen_fail(ZEN_ERR_INPUT, "%s already exists; choose another --out or remove it", path);
    size_t n = strlen(path) + 9;
    if (!(*partial = zen_malloc(n))) return ZEN_ERR_INTERNAL;
    snprintf(*partial, n, "%s.partial", path);
    zen_remove_tree(*partial);
    int rc = zen_mkdir_p(*partial);
    if (rc) {
        free(*partial);
        *partial = NULL;
    }
    return rc;
}

int zen_atomic_dir_end(int rc, char **partial, const char *path) {
    if (!*partial) return rc;
    if (!rc) {
        struct stat st;
        if (stat(path, &st) == 0 && (!empty_dir(path) || rmdir(path) != 0)) /* appeared meanwhile: never replaced */
            rc = zen_fail(ZEN_ERR_INPUT, "%s already exists; choose another --out or remove it", path);
        else if (rename(*partial, path) != 0)
            rc = zen_fail(ZEN_ERR_INTERNAL, "%s: cannot rename into place: %s", path, strerror(errno));
        else
            zen_sync_parent(path);
    }
    if (rc) zen_remove_tree(*partial);
    free(*partial);
    *partial = NULL;
    return rc;
}

int zen_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int zen_write_json_file(const char *dir, const char *name, cJSON *root) {
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char *path = zen_path_join(dir, name);
    int rc = text && path ? zen_write_text_file(path, text) : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    free(text);
    free(path);
    return rc;
}

int zen_write_text_file(const char *path, const char *text) {
    zen_atomic_file f;
    int rc = zen_atomic_open(&f, path);
    if (!rc) rc = zen_atomic_write(&f, text, strlen(text));
    return rc ? (zen_atomic_abort(&f), rc) : zen_atomic_commit(&f);
}
