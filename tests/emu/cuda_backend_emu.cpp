/* tests/emu/cuda_backend_emu.cpp: the CUDA backend's own sources
 * (kernels/cuda/ *.cu), built as C++ against the CUDA emulator
 * (tests/emu/cuda_emu.h) so tests/test_cuda.c runs on the CPU as
 * test_cuda_emu: every kernel, launch shape and cuBLAS call of the backend,
 * f32 and bf16 compute, against the CPU backend. */
#include "cuda_emu.h"

#include "kernels/cuda/attention_exact.cu"
#include "kernels/cuda/backend_cuda.cu"
#include "kernels/cuda/flash_attention.cu"
#include "kernels/cuda/linear_cuda.cu"
#include "kernels/cuda/lora_cuda.cu"

/* for tests/test_cuda.c: run the following launches with every block's
 * threads in the other order than the environment's (ZEN_EMU_REVERSE), so one
 * process can check that a kernel's result does not depend on the order */
extern "C" void zk_emu_flip_order(int flip) {
    static const bool env = getenv("ZEN_EMU_REVERSE") != NULL;
    emu::reverse_order = flip ? !env : env;
}
