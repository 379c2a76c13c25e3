/* tests/fuzz/fuzz_safetensors.c: the SafeTensors header and data (st_open's
 * checks on a file in memory). A file that opens has every tensor's bytes
 * inside it, sizes that match shape x dtype, and unique names. */
#include "fuzz_common.h"
#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    if (st_open_memory(&f, data, size, "fuzz.safetensors")) {
        fuzz_check_message();
        return 0;
    }
    size_t covered = 0;
    unsigned sum = 0;
    for (int i = 0; i < f.count; i++) {
        const st_tensor *t = &f.tensors[i];
        const unsigned char *p = t->data;
        FUZZ_ASSERT(p >= data && p + t->nbytes <= data + size);
        FUZZ_ASSERT(t->nbytes == (size_t)t->numel * t->elem_size);
        if (t->nbytes) sum += p[0] + p[t->nbytes - 1];
        covered += t->nbytes;
        FUZZ_ASSERT(st_find(&f, t->name) == t);
        zen_dtype dt;
        if (!st_float_dtype(&f, t, &dt)) FUZZ_ASSERT(zen_dtype_bytes(dt, 1) == t->elem_size);
    }
    FUZZ_ASSERT(covered <= size); /* tensors are contiguous and do not overlap */
    for (int i = 0; i < f.meta_count; i++) FUZZ_ASSERT(st_meta(&f, f.meta_keys[i]) != NULL);
    (void)sum;
    st_close(&f);
    return 0;
}
