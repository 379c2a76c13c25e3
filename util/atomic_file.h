/* util/atomic_file.h: outputs that appear only complete. Every file zen
 * writes goes to PATH.tmp first; commit flushes it, fsyncs it, closes it
 * (once, whatever fails), renames it over PATH and fsyncs the directory, so a
 * crash, a full disk or a failed close never leaves a half-written PATH and
 * never removes an older complete one. Any failure removes PATH.tmp.
 *
 *   zen_atomic_file f;
 *   if ((rc = zen_atomic_open(&f, path))) return rc;
 *   rc = zen_atomic_write(&f, bytes, n);            (as often as needed)
 *   rc = rc ? (zen_atomic_abort(&f), rc) : zen_atomic_commit(&f);
 *
 * Writers that do not own the FILE (HDF5 writes its own) use
 * zen_atomic_tmp_name and zen_atomic_commit_path on the finished temp file;
 * directories built under DIR.partial use zen_atomic_commit_dir. */
#ifndef ZEN_ATOMIC_FILE_H
#define ZEN_ATOMIC_FILE_H
#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *fp;     /* the open temp file, NULL once closed */
    char *path;   /* the final name */
    char *tmp;    /* path + ".tmp" */
} zen_atomic_file;

/* Creates PATH.tmp for writing. PATH must not be a directory (user error). */
int zen_atomic_open(zen_atomic_file *f, const char *path);
int zen_atomic_write(zen_atomic_file *f, const void *data, size_t n);
/* Flush, fsync, close, rename into place, fsync the directory; on failure the
 * temp file is removed, the error names PATH and the cause (disk full ...). */
int zen_atomic_commit(zen_atomic_file *f);
/* Closes and removes the temp file (safe after a failed commit, and twice). */
void zen_atomic_abort(zen_atomic_file *f);

/* *out = "PATH.tmp" (malloc'd), after checking that PATH is not a directory. */
int zen_atomic_tmp_name(const char *path, char **out);
/* fsync(tmp), rename(tmp, path), fsync the directory; removes tmp on failure. */
int zen_atomic_commit_path(const char *tmp, const char *path);
/* A directory output (a model, a PEFT adapter) built under PATH.partial and
 * renamed into place when complete. begin refuses a PATH that exists and is
 * not an empty directory (user error), clears a stale PATH.partial and makes
 * a fresh one (*partial, malloc'd). end commits it when rc is 0 (rename,
 * fsync the parent), else removes it; it frees *partial and returns the
 * outcome. */
int zen_atomic_dir_begin(const char *path, char **partial);
int zen_atomic_dir_end(int rc, char **partial, const char *path);

/* fsyncs the directory holding path, so a rename into it survives a crash
 * (best effort: some file systems refuse fsync on directories) */
void zen_sync_parent(const char *path);

/* 1 if a and b name the same existing file (same device and inode) */
int zen_same_file(const char *a, const char *b);

/* Writes text to path atomically. */
int zen_write_text_file(const char *path, const char *text);
/* Writes a cJSON tree, pretty-printed, to dir/name atomically and frees the
 * tree (also on failure). */
struct cJSON;
int zen_write_json_file(const char *dir, const char *name, struct cJSON *root);

#endif
