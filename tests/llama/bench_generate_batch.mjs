// tests/llama/bench_generate_batch.mjs: llama.cpp's (node-llama-cpp, CPU build)
// batched decoding speed: S sequences in one context, each fed the same prompt
// of token ids, generate N greedy new tokens together; prints JSON
// {"sequences", "prefill_tokens_per_s", "decode_tokens_per_s", "total_tokens_per_s",
//  "tokens": [[first sequence's tokens], ...]}.
// usage: node bench_generate_batch.mjs MODEL.gguf TOKENS_CSV N S [THREADS]
// LLAMA_MMAP=0: the weights read into llama.cpp's own memory (useMmap false), not mapped from the file.
//
// node-llama-cpp 3.21.1 batches: each sequence's evaluate() queues its tokens
// in the context (LlamaContext._decodeTokens), and one dispatcher
// (dispatchPendingBatch) packs everything queued into one llama_batch and
// calls llama_decode once (initBatch, addToBatch per sequence, decodeBatch).
// It does not wait for every sequence, though: it dispatches on the next
// event-loop cycle and keeps decoding whatever is queued, so left alone the S
// loops drift apart (batches of S-1 tokens, more llama_decode calls). So the
// loops below step together: each waits until all have their token, then all
// ask for the next one in sequence order, and every step is one llama_decode
// of S tokens. The order matters: out of order, sequences sometimes got each
// other's tokens (seen with a distinct prompt per sequence), likely because the
// S samplings run at once on libuv's thread pool while llama.cpp reorders an
// out-of-order batch's outputs lazily inside llama_get_logits_ith.
// Sizes: contextSize is per sequence (the llama.cpp context gets contextSize * S
// cells, a KV cache per sequence; node-llama-cpp pads contextSize up to a multiple
// of 256); batchSize is for all sequences together (n_batch = n_ubatch), so
// S * prompt lets the S prompts prefill in one llama_decode.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, csv, nArg, sArg, threadsArg] = process.argv.slice(2);
const prompt = csv.split(",").map(Number), n = Number(nArg), s = Number(sArg);
const threads = Number(threadsArg || 0) || undefined;
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, useMmap: process.env.LLAMA_MMAP !== "0"});
const context = await model.createContext({sequences: s, contextSize: prompt.length + n + 8,
                                           batchSize: s * (prompt.length + 8), flashAttention: false, threads});
const sequences = Array.from({length: s}, () => context.getSequence());
const tokens = sequences.map(() => []), tFirst = [], tEnd = [];
let waiting = [], running = s;  // lockstep: [sequence index, resume] of the loops waiting for the others
const release = () => {
    if (!waiting.length || waiting.length < running) return;
    const resume = waiting.sort((a, b) => a[0] - b[0]);
    waiting = [];
    setImmediate(() => resume.forEach(([, f]) => f()));  // after the dispatcher's loop has emptied
};
const t0 = performance.now();
await Promise.all(sequences.map(async (sequence, i) => {
    for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
        if (!tokens[i].length) tFirst[i] = performance.now();
        tokens[i].push(token);
        if (tokens[i].length >= n) break;
        await new Promise((resolve) => { waiting.push([i, resolve]); release(); });
    }
    tEnd[i] = performance.now();
    running--;  // done (or end of generation): the others stop waiting for it
    release();
}));
const t1 = Math.max(...tFirst), t2 = Math.max(...tEnd);  // all have their first token; all are done
const count = tokens.reduce((sum, t) => sum + t.length, 0);  // S * N unless a sequence hit end of generation
console.log(JSON.stringify({sequences: s, prefill_tokens_per_s: s * prompt.length / ((t1 - t0) / 1000),
                            decode_tokens_per_s: (count - s) / ((t2 - t1) / 1000),
                            total_tokens_per_s: count / ((t2 - t0) / 1000), tokens}));
await context.dispose();
await model.dispose();
