// tests/llama/bench_generate.mjs: llama.cpp's (node-llama-cpp, CPU build)
// speed on a prompt of token ids and N greedy new tokens; prints JSON
// {"prefill_tokens_per_s", "decode_tokens_per_s", "tokens"}.
// usage: node bench_generate.mjs MODEL.gguf TOKENS_CSV N [THREADS]
// LLAMA_MMAP=0: the weights read into llama.cpp's own memory (useMmap false), not mapped from the file.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, csv, nArg, threadsArg] = process.argv.slice(2);
const prompt = csv.split(",").map(Number), n = Number(nArg), threads = Number(threadsArg || 0) || undefined;
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, useMmap: process.env.LLAMA_MMAP !== "0"});
const context = await model.createContext({contextSize: prompt.length + n + 8, batchSize: prompt.length + 8,
                                           flashAttention: false, threads});
const sequence = context.getSequence();
const tokens = [];
const t0 = performance.now();
let tFirst = 0;
for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
    if (!tokens.length) tFirst = performance.now();
    tokens.push(token);
    if (tokens.length >= n) break;
}
const t1 = performance.now();
console.log(JSON.stringify({prefill_tokens_per_s: prompt.length / ((tFirst - t0) / 1000),
                            decode_tokens_per_s: (tokens.length - 1) / ((t1 - tFirst) / 1000), tokens}));
await context.dispose();
await model.dispose();
