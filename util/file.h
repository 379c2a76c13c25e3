/* util/file.h: small file helpers with one-line errors naming the path. */
#ifndef ZEN_FILE_H
#define ZEN_FILE_H
#include <stddef.h>
#include <stdlib.h>

/* Reads a whole (small, at most 64 MiB) regular file into a NUL-terminated
 * malloc'd buffer; *len_out (optional) gets its length. */
int zen_read_file_bytes(const char *path, char **out, size_t *len_out);
int zen_read_text_file(const char *path, char **out);
/* Reads and parses (strictly, util/json.h) a JSON file whose top level must
 * be an object (a cJSON tree the caller frees with cJSON_Delete); errors name
 * the path. */
struct cJSON;
int zen_read_json_object(const char *path, struct cJSON **out);
/* Maps a whole regular file read-only: *map, *size; min_size the least a
 * file of its kind can be (else "too short for a <kind>"). Unmap with
 * munmap(*map, *size). */
int zen_map_file(const char *path, size_t min_size, const char *kind, void **map, size_t *size);
/* Creates a directory (and parents) if missing. */
int zen_mkdir_p(const char *path);
/* Creates the directories above a file path if missing (every output file of
 * zen goes through this: zen_atomic_open and the dataset writer). */
int zen_mkdir_parents(const char *path);
/* An output file about to be written later: its parents made, and its
 * directory writable; a one-line error naming it otherwise (checked before
 * any work, so a long run does not end in a failed write). */
int zen_output_ready(const char *path);
/* path joined as dir/name into a malloc'd string */
char *zen_path_join(const char *dir, const char *name);
int zen_file_exists(const char *path);
/* Removes a file or a directory tree (best effort; 0 when it is gone). */
int zen_remove_tree(const char *path);
/* "12.3 MiB"-style size with a unit that fits */
void zen_format_bytes(char *buf, size_t cap, size_t bytes);

#endif
