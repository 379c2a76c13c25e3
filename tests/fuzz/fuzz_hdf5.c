/* tests/fuzz/fuzz_hdf5.c: the dataset check (zen_dataset_check_image: the
 * same layout, storage and value checks zen_dataset_open runs, in this
 * process, on an HDF5 file image). A file that passes has consistent
 * counts. Crashes inside libhdf5 itself are contained by zen's child-process
 * guard in real use; here they show as findings (see scripts/fuzz). */
#include <hdf5.h>

#include "data/dataset.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    /* let libhdf5 keep its freed structures for reuse (no limits on its free
     * lists): each open callocs a metadata cache of a few MB, which the
     * sanitizer's allocator would otherwise map and unmap every run */
    H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zen_dataset_info info;
    if (zen_dataset_check_image(data, size, 256, &info)) {
        fuzz_check_message();
        return 0;
    }
    FUZZ_ASSERT(info.n_tokens >= 2 && info.n_masked >= 0 && info.n_masked < info.n_tokens);
    FUZZ_ASSERT(info.vocab_size >= 1 && info.n_docs >= -1);
    FUZZ_ASSERT(info.packed_seq_len == 0 || (info.n_tokens - 1) % info.packed_seq_len == 0);
    return 0;
}
