/* tests/fuzz/fuzz_hdf5.c: the dataset check (zen_dataset_check_image: the
 * same layout, storage and value checks zen_dataset_open runs, in this
 * process, on an HDF5 file image). A file that passes has consistent
 * counts. Crashes inside libhdf5 itself are contained by zen's child-process
 * guard in real use; here they show as findings (see scripts/fuzz). */
#include "data/dataset.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zen_dataset_info info;
    if (zen_dataset_check_image(data, size, 256, &info)) {
        fuzz_check_message();
        return 0;
    }
    FUZZ_ASSERT(info.n_tokens >= 2 && info.n_masked >= 0 && info.n_masked < info.n_tokens);
    FUZZ_ASSERT(info.vocab_size >= 1 && info.n_docs >= -1);
    return 0;
}
