/* tests/emu/test_flash_emu.cpp: zen's CUDA flash-attention kernels, run on the
 * CPU under tests/emu/cuda_emu.h, against the CPU backend's exact fp32
 * attention (forward, lse, dq, dk, dv), on shapes that hit every edge:
 * sequence lengths that are not multiples of any tile, a single token, GQA
 * and MHA, head sizes 32, 64 and 128, documents (segments: short ones,
 * boundaries on and off the tiles, one-token ones). Each case also runs with the fibers
 * in reverse order: a missing barrier would change the results, so they must
 * be bit-identical. Tolerances are those of tests/test_cuda.c's bf16 checks
 * (inputs are rounded to bf16: relative step 2^-8).
 * This tests the kernels' logic, not the GPU: tests/test_cuda.c (on a GPU)
 * is still the check of the compiled code. */
#include "cuda_emu.h"

extern "C" {
#include "kernels/kernels.h"
}
#include "kernels/cuda/flash_attention_kernels.cuh"

static int failures;

static std::vector<float> random_vec(size_t n, float scale, uint64_t seed) {
    std::vector<float> v(n);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = scale * ((float)(s >> 40) / 8388608.0f - 1.0f);
    }
    return v;
}

static void check(const char *what, const std::vector<float> &ref, const std::vector<float> &got, double tol) {
    double dd = 0, rr = 0;
    for (size_t i = 0; i < ref.size(); i++) dd += (got[i] - ref[i]) * (double)(got[i] - ref[i]), rr += (double)ref[i] * ref[i];
    if (rr == 0) { /* an exactly zero reference (dq, dk of one token): bf16-level noise allowed */
        double rms = sqrt(dd / (double)ref.size());
        bool ok = rms <= 1e-2;
        printf("%s   %-6s reference is 0; rms %.2e (tol 1e-02)\n", ok ? "ok  " : "FAIL", what, rms);
        failures += !ok;
        return;
    }
    double rel = sqrt(dd / rr);
    bool ok = rel <= tol; /* NaN fails */
    printf("%s   %-6s rel err %.2e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, rel, tol);
    failures += !ok;
}

struct outputs {
    std::vector<float> o, lse, dq, dk, dv;
};

template <int HD>
static outputs run_flash(const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
                         const std::vector<float> &dout, const int *seg, int B, int T, int nh, int nkv, bool reverse) {
    emu::reverse_order = reverse;
    outputs r;
    size_t nq = (size_t)B * T * nh * HD, nk = (size_t)B * T * nkv * HD, rows = (size_t)B * nh * T;
    r.o.assign(nq, NAN), r.lse.assign(rows, NAN), r.dq.assign(nq, NAN), r.dk.assign(nk, NAN), r.dv.assign(nk, NAN);
    std::vector<float> D(rows, NAN);
    float scale = 1.0f / sqrtf((float)HD);
    dim3 grid((unsigned)((T + FA_BR - 1) / FA_BR), (unsigned)nh, (unsigned)B);
    emu::launch(grid, dim3(FA_THREADS), fwd_smem_bytes<HD>(), [&] {
        flash_fwd_kernel<HD>(r.o.data(), r.lse.data(), q.data(), k.data(), v.data(), seg, T, nh, nkv, scale);
    });
    emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(256), 0,
                [&] { attn_rowdot_kernel(D.data(), dout.data(), r.o.data(), T, nh, HD, rows); });
    emu::launch(grid, dim3(FA_THREADS), dq_smem_bytes<HD>(), [&] {
        flash_bwd_dq_kernel<HD>(r.dq.data(), dout.data(), r.lse.data(), D.data(), q.data(), k.data(), v.data(), seg, T,
                                nh, nkv, scale);
    });
    dim3 grid2((unsigned)((T + FA_BKV - 1) / FA_BKV), (unsigned)nkv, (unsigned)B);
    emu::launch(grid2, dim3(FA_THREADS), dkv_smem_bytes<HD>(), [&] {
        flash_bwd_dkv_kernel<HD>(r.dk.data(), r.dv.data(), dout.data(), r.lse.data(), D.data(), q.data(), k.data(),
                                 v.data(), seg, T, nh, nkv, scale);
    });
    return r;
}

/* the segment starts of documents whose lengths cycle through `lengths` (0: one segment) */
static std::vector<int> segments(int B, int T, const std::vector<int> &lengths) {
    std::vector<int> seg((size_t)B * T, 0);
    if (lengths.empty()) return seg;
    for (int b = 0; b < B; b++) {
        int start = 0, next = 0, k = b; /* each sequence starts at another length */
        for (int t = 0; t < T; t++) {
            if (t == next) start = t, next = t + lengths[(size_t)k++ % lengths.size()];
            seg[(size_t)b * T + t] = start;
        }
    }
    return seg;
}

template <int HD>
static void test_case(zk_backend *cpu, int B, int T, int nh, int nkv, const std::vector<int> &doc_lengths = {}) {
    printf("flash attention B=%d T=%d heads %d/%d hd=%d%s (emulated) vs CPU fp32\n", B, T, nh, nkv, HD,
           doc_lengths.empty() ? "" : " with documents");
    std::vector<int> segv = segments(B, T, doc_lengths);
    const int *seg = doc_lengths.empty() ? NULL : segv.data();
    size_t nq = (size_t)B * T * nh * HD, nk = (size_t)B * T * nkv * HD, rows = (size_t)B * nh * T;
    std::vector<float> q = random_vec(nq, 2.0f, 1), k = random_vec(nk, 1.0f, 2), v = random_vec(nk, 1.0f, 3);
    std::vector<float> dout = random_vec(nq, 1.0f, 4);
    outputs ref;
    ref.o.assign(nq, 0), ref.lse.assign(rows, 0), ref.dq.assign(nq, 0), ref.dk.assign(nk, 0), ref.dv.assign(nk, 0);
    cpu->attention_fwd(cpu, ref.o.data(), ref.lse.data(), q.data(), k.data(), v.data(), seg, B, T, nh, nkv, HD);
    cpu->attention_bwd(cpu, ref.dq.data(), ref.dk.data(), ref.dv.data(), dout.data(), ref.o.data(), ref.lse.data(),
                       q.data(), k.data(), v.data(), seg, B, T, nh, nkv, HD);
    outputs a = run_flash<HD>(q, k, v, dout, seg, B, T, nh, nkv, false);
    check("out", ref.o, a.o, 1e-2);
    check("lse", ref.lse, a.lse, 1e-2);
    check("dq", ref.dq, a.dq, 2e-2);
    check("dk", ref.dk, a.dk, 2e-2);
    check("dv", ref.dv, a.dv, 2e-2);
    outputs b = run_flash<HD>(q, k, v, dout, seg, B, T, nh, nkv, true);
    bool same = !memcmp(a.o.data(), b.o.data(), nq * 4) && !memcmp(a.lse.data(), b.lse.data(), rows * 4) &&
                !memcmp(a.dq.data(), b.dq.data(), nq * 4) && !memcmp(a.dk.data(), b.dk.data(), nk * 4) &&
                !memcmp(a.dv.data(), b.dv.data(), nk * 4);
    printf("%s   threads in reverse order give identical bits\n", same ? "ok  " : "FAIL");
    failures += !same;
}

int main(void) {
    zk_backend *cpu = zk_open("cpu", "f32");
    test_case<32>(cpu, 2, 130, 4, 1);  /* T not a multiple of any tile, GQA 4:1, B > 1 */
    test_case<64>(cpu, 1, 64, 4, 4);   /* MHA, exactly one tile of each kind */
    test_case<128>(cpu, 1, 1, 2, 1);   /* a single token */
    test_case<128>(cpu, 1, 97, 4, 1);  /* Zen-nano's head size, ragged T */
    /* documents: many short ones, boundaries on the 32/64 tiles and off them,
     * one-token documents, a document longer than a tile */
    test_case<32>(cpu, 2, 130, 4, 1, {5, 3, 1, 9});
    test_case<32>(cpu, 2, 200, 4, 2, {32, 64, 1, 70});
    test_case<64>(cpu, 1, 150, 2, 2, {1, 100, 49});
    test_case<128>(cpu, 2, 97, 4, 1, {40, 2, 55});
    zk_close(cpu);
    printf("%d failed\n", failures);
    return failures ? 1 : 0;
}
