// tests/llama/probs.mjs: loads a GGUF in llama.cpp (node-llama-cpp, CPU build)
// and prints, as JSON, the next-token probabilities after each prefix of the
// given token ids: {"probs": [[p_0 .. p_{V-1}], ...]} (one row per position).
// usage: node probs.mjs MODEL.gguf TOKENS_CSV [--lora ADAPTER.gguf] [--f16-cache]
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = process.argv.slice(2);
const modelPath = args[0];
const tokens = args[1].split(",").map(Number);
const loraIndex = args.indexOf("--lora");
const f16Cache = args.includes("--f16-cache");

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
    contextSize: Math.max(64, tokens.length + 8),
    batchSize: Math.max(64, tokens.length + 8),
    flashAttention: false,
    experimentalKvCacheKeyType: f16Cache ? "F16" : "F32",
    experimentalKvCacheValueType: f16Cache ? "F16" : "F32",
    lora: loraIndex >= 0 ? {adapters: [{filePath: args[loraIndex + 1], scale: 1}]} : undefined,
});
const sequence = context.getSequence();
const input = tokens.map((t) => [t, {generateNext: {probabilities: true}}]);
const output = await sequence.controlledEvaluate(input);
const V = model.tokens ? undefined : undefined;
const rows = output.map((o) => {
    const probs = o.next.probabilities;
    const row = [];
    for (const [token, p] of probs) row[token] = p;
    return Array.from(row, (p) => p ?? 0);
});
console.log(JSON.stringify({probs: rows}));
await context.dispose();
await model.dispose();
