"""Sentence-embedding throughput of the MiniLM-size encoder (issue 17's target: >= 200 sentences/s at batch 64, sequence 64 on CPU).

Run from the checkout: `.venv/bin/python benchmarks/text_embed_bench.py [--threads 1,2] [--repeats 5]`. Texts are real
paragraphs of the standard library's docstrings, each long enough that the tokenizer cuts it at exactly 64 tokens, so every
batch is 64 x 64. Measured side by side, in one process, with the same texts:

- `embed_text fp32`       vssl_nb.text_embed.embed_text (cached model, fast tokenizer, length-sorted batches) in float32;
- `embed_text bf16`       the same under bfloat16 autocast (what precision='auto' picks on a CPU with native bf16);
- `forward only`          the model's forward pass on pre-tokenised batches, float32 (no tokenisation: the ceiling);
- `sentence-transformers` the wheel's released model through SentenceTransformer.encode (batch 64, max_seq_length 64, float32);
- the fast (Rust) tokenizer alone.
The methods are timed in turns (round robin, best of `--repeats` each), so a machine shared with other jobs slows them alike.

Prints a Markdown table; `--out FILE` also writes it."""
import argparse
import os
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')


def texts_of_64_tokens(n: int, tok) -> list[str]:
    from vssl_nb.text import stdlib_documents
    docs, _ = stdlib_documents()
    paras = [p for d in docs for p in d['paragraphs'] if len(p.split()) >= 70]
    out = [p for p in paras if len(tok(p, truncation=True, max_length=65)['input_ids']) >= 64]
    if len(out) < n: out = (out * (n // len(out) + 1))
    return out[:n]


def best_rate(fn, n: int, repeats: int) -> float:
    fn()   # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return n / min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', default='1', help='comma-separated torch thread counts to measure, e.g. 1,2')
    ap.add_argument('--n', type=int, default=512, help='sentences per timed pass (a multiple of 64)')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    import torch
    from vssl_nb.text_embed import MiniLMReference, embed_text, native_bf16, text_encoder, text_tokenizer
    tok = text_tokenizer()
    texts = texts_of_64_tokens(a.n, tok)
    enc = text_encoder('minilm')
    ref = MiniLMReference(); ref.model.max_seq_length = 64
    batches = [enc.tokenize(texts[i:i + 64], 64) for i in range(0, len(texts), 64)]
    assert all(b['input_ids'].shape == (64, 64) for b in batches), 'every batch must be 64 x 64'
    load = os.getloadavg()
    rows = []
    for th in [int(x) for x in a.threads.split(',')]:
        torch.set_num_threads(th)
        def forward_only():
            with torch.inference_mode():
                for b in batches: enc.encode(b['input_ids'], b['attention_mask'])
        fns = {'embed_text fp32': lambda: embed_text(texts, batch_size=64, max_length=64, precision='fp32'),
               'embed_text bf16': lambda: embed_text(texts, batch_size=64, max_length=64, precision='bf16'),
               'forward only': forward_only,
               'sentence-transformers': lambda: ref.embed(texts, batch_size=64)}
        for f in fns.values(): f()   # warm-up
        best = {k: float('inf') for k in fns}
        for _ in range(a.repeats):
            for k, f in fns.items():
                t = time.perf_counter(); f(); best[k] = min(best[k], time.perf_counter() - t)
        rows.append({'threads': th, **{k: len(texts) / v for k, v in best.items()}})
    fast_tok = best_rate(lambda: tok(texts, truncation=True, max_length=64, padding=True), len(texts), a.repeats)
    after = os.getloadavg()
    lines = [f"MiniLM-L6 (6 layers, 384 wide, {sum(p.numel() for p in enc.mlm.base_model.parameters()) / 1e6:.1f} M parameters), "
             f"batch 64 x sequence 64, {len(texts)} sentences a pass, best of {a.repeats}; load average before {load[0]:.2f}, after "
             f"{after[0]:.2f} on {os.cpu_count()} CPUs; native bf16: {native_bf16()}; torch {torch.__version__}", '',
             '| threads | embed_text fp32 (sentences/s) | embed_text bf16 | forward only fp32 | sentence-transformers fp32 | embed_text fp32 / sentence-transformers |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['threads']} | {r['embed_text fp32']:.0f} | {r['embed_text bf16']:.0f} | {r['forward only']:.0f} | "
                     f"{r['sentence-transformers']:.0f} | {r['embed_text fp32'] / r['sentence-transformers']:.2f} |")
    lines += ['', f"Tokenisation alone (fast tokenizer, 64 tokens, padded): {fast_tok:,.0f} sentences/s."]
    text = '\n'.join(lines)
    print(text)
    if a.out:
        with open(a.out, 'w') as f: f.write(text + '\n')


if __name__ == '__main__':
    main()
