/* util/file.c: small file helpers. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "file.h"
#include "json.h"

int zen_read_file_bytes(const char *path, char **out, size_t *len_out) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return zen_fail(ZEN_ERR_INPUT, "%s: not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot seek", path);
    }
    long size = ftell(f);
    rewind(f);
    if (size < 0 || size > (64L << 20)) {
        fclose(f);
        return zen_fail(ZEN_ERR_INPUT, "%s: not a readable text file of at most 64 MiB", path);
    }
    char *buf = zen_malloc((size_t)size + 1);
    if (!buf) {
        fclose(f);
        return ZEN_ERR_INTERNAL;
    }
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(buf);
        return zen_fail(ZEN_ERR_INPUT, "%s: short read", path);
    }
    buf[size] = '\0';
    *out = buf;
    if (len_out) *len_out = (size_t)size;
    return 0;
}

int zen_map_file(const char *path, size_t min_size, const char *kind, void **map, size_t *size) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return zen_fail(ZEN_ERR_INPUT, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size < min_size) {
        close(fd);
        return zen_fail(ZEN_ERR_INPUT, "%s: too short for a %s (%zu bytes)", path, kind, (size_t)st.st_size);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return zen_fail(ZEN_ERR_INTERNAL, "%s: cannot map: %s", path, strerror(errno));
    *map = m;
    *size = (size_t)st.st_size;
    return 0;
}

int zen_read_text_file(const char *path, char **out) { return zen_read_file_bytes(path, out, NULL); }

int zen_read_json_object(const char *path, cJSON **out) {
    char *text = NULL;
    size_t len = 0;
    int rc = zen_read_file_bytes(path, &text, &len);
    if (rc) return rc;
    cJSON *root = NULL;
    rc = zen_json_parse(text, len, path, &root);
    free(text);
    if (rc) return rc;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zen_fail(ZEN_ERR_INPUT, "%s: expected a JSON object", path);
    }
    *out = root;
    return 0;
}

int zen_mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return zen_fail(ZEN_ERR_INPUT, "%s: cannot create directory: %s", buf, strerror(errno));
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot create directory: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return zen_fail(ZEN_ERR_INPUT, "%s: exists and is not a directory", buf);
    return 0;
}

int zen_mkdir_parents(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf) return 0; /* the current directory or / */
    *slash = '\0';
    return zen_mkdir_p(buf);
}

int zen_output_ready(const char *path) {
    int rc = zen_mkdir_parents(path);
    if (rc) return rc;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return zen_fail(ZEN_ERR_INPUT, "%s is a directory", path);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    const char *dir = !slash ? "." : slash == buf ? "/" : (*slash = '\0', buf);
    if (access(dir, W_OK | X_OK) != 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot write into %s: %s", path, dir, strerror(errno));
    return 0;
}

char *zen_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = zen_malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

int zen_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

void zen_format_bytes(char *buf, size_t cap, size_t bytes) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}

int zen_remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return remove(path) == 0 || errno == ENOENT ? 0 : -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *child = zen_path_join(path, e->d_name);
        if (child) zen_remove_tree(child);
        free(child);
    }
    closedir(d);
    return rmdir(path);
}
