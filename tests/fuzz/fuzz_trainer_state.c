/* tests/fuzz/fuzz_trainer_state.c: a checkpoint's trainer_state.json, as
 * --resume reads it, then checked against a run's position. */
#include "fuzz_common.h"
#include "train/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zen_train_state st;
    zen_run_config cfg;
    if (zen_checkpoint_parse_state((const char *)data, size, "trainer_state.json", &st, &cfg)) {
        fuzz_check_message();
        return 0;
    }
    FUZZ_ASSERT(st.step >= 0 && st.epoch >= 0 && st.batch_in_epoch >= 0 && st.elapsed_s >= 0);
    if (zen_checkpoint_check_position(&st, "trainer_state.json", 1000, 7)) fuzz_check_message();
    else FUZZ_ASSERT(st.step <= 1000 && st.epoch == st.step / 7);
    return 0;
}
