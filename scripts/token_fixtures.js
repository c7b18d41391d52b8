// Writes tests/fixtures/token_counts.jsonl: token counts of fixed texts by gpt-tokenizer (npm),
// an implementation of OpenAI's encodings independent of the tiktoken-rs crate Switchyard uses.
//
//   cd "$(mktemp -d)" && npm install gpt-tokenizer@4.0.0 && \
//     NODE_PATH=$PWD/node_modules node /path/to/switchyard/scripts/token_fixtures.js /path/to/switchyard
const fs = require('fs');
const path = require('path');
const cl = require('gpt-tokenizer/cjs/encoding/cl100k_base');
const o2 = require('gpt-tokenizer/cjs/encoding/o200k_base');

const root = process.argv[2] || path.join(__dirname, '..');
const texts = [
  'hello world',
  'tiktoken is great!',
  'antidisestablishmentarianism',
  'The quick brown fox jumps over the lazy dog.',
  '  leading and trailing spaces   \n\n\ttabs\tand\nnewlines\r\n',
  'def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n',
  '```rust\nfn main() {\n    let v: Vec<u64> = (1..=10).map(|x| x * x).collect();\n    println!("{:?}", v);\n}\n```',
  'Solve for x: $\\int_0^1 x^2 \\, dx = \\frac{1}{3}$ and $\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$.',
  '我们需要一个路由器来选择最便宜的模型。',
  '日本語のテキストもトークン化されます。東京は日本の首都です。',
  'Привет, как дела? Это тест токенизатора.',
  '🙂🚀 emoji and ünïcödé àccents — with dashes… and “quotes”',
  '<|endoftext|> is a special token written as plain text',
  '1234567890 3.14159265358979 1e-9 0xDEADBEEF 2026-11-29T18:11:22Z',
  "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days' ORDER BY name;",
  'https://example.com/path/to/resource?query=value&other=42#fragment',
  'a'.repeat(1000),
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. '.repeat(20),
];
const arena = fs
  .readFileSync(path.join(root, 'simulations/data/routerarena/claude-3-haiku-20240307.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim());
arena.forEach((l, i) => {
  if (i % 80 === 0) texts.push(JSON.parse(l).question);
});
const out = [];
for (const [name, enc] of [['cl100k_base', cl], ['o200k_base', o2]]) {
  for (const text of texts) {
    // Special-token strings count as plain text, like tiktoken's encode_ordinary.
    const n = enc.encode(text, { allowedSpecial: new Set(), disallowedSpecial: new Set() }).length;
    out.push(JSON.stringify({ encoding: name, count: n, text }));
  }
}
fs.writeFileSync(path.join(root, 'tests/fixtures/token_counts.jsonl'), out.join('\n') + '\n');
console.log(`${out.length} fixtures`);
