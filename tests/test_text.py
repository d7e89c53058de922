"""The text stack (vssl_nb.text, vssl_nb.text_embed, vssl_nb.methods.declutr): the corpus and its manifest, DeCLUTR's
span rules, bad input named, offline by construction (sockets blocked), a tiny end-to-end DeCLUTR run and `vssl text-corpus`."""
import json
import socket

import numpy as np
import pytest
import torch

from vssl_nb.text import (CPU_SPANS, SpanDataset, TextCorpus, build_text_corpus, document_spans, pydoc_root, read_doc_page,
                          sample_spans, spans_html, stdlib_documents)
from vssl_nb.core import DataFormatError

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    "A small standard-library corpus with the CPU span setting."
    d = tmp_path_factory.mktemp('corpus')
    build_text_corpus(d, 'stdlib', limit=120, **CPU_SPANS)
    return TextCorpus(d)


def test_manifest_counts_short_documents_and_keeps_them(corpus):
    m = corpus.manifest
    assert m['source'] == 'stdlib' and m['documents'] == len(corpus) > 20
    short = [d['id'] for d in corpus.docs if d['words'] < 128]
    assert short and m['too_short'] == {'count': len(short), 'ids': short}   # counted and named, not dropped
    assert m['trainable'] == len(corpus) - len(short) == len(corpus.trainable)
    ds = SpanDataset(corpus, lambda xs, **k: {'input_ids': [[1] * len(x.split()) for x in xs]}, **CPU_SPANS)
    assert len(ds) == m['trainable'] and not set(ds.names) & set(short)


def test_span_rules_on_many_draws():
    rng = np.random.default_rng(1)
    rel = set()
    for _ in range(500):
        a, p = sample_spans(200, rng, 8, 32, num_anchors=2, num_positives=3)
        assert len(a) == 2 and len(p) == 6
        assert a[0][1] <= a[1][0] or a[1][1] <= a[0][0]
        for k, (ps, pe) in enumerate(p):
            s, e = a[k // 3]
            assert 8 <= pe - ps <= 32 and 0 <= ps < pe <= 200 and ps <= e and pe >= s
            rel.add('inside' if s <= ps and pe <= e else 'adjacent' if ps == e or pe == s else 'overlap')
    assert rel == {'inside', 'adjacent', 'overlap'}
    with pytest.raises(ValueError, match=r'library/os: 127 tokens.*2·max_span·2|library/os: 127 tokens'):
        sample_spans(127, rng, 8, 32, name='library/os')
    with pytest.raises(ValueError, match='min_span <= max_span'): sample_spans(1000, rng, 33, 32)


def test_spans_are_the_documents_words_and_render():
    text = ' '.join(f'w{i}' for i in range(150))
    s = document_spans(text, np.random.default_rng(0), **CPU_SPANS)
    for span, (a, b) in zip(s['anchors'] + s['positives'], s['anchor_chars'] + s['positive_chars']):
        assert text[a:b] == span and 8 <= len(span.split()) <= 32
    html = spans_html(text, s)
    assert html.count('background:#ffd54f') >= 1 and 'border-bottom:3px solid' in html and 'w149' in html


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='apt-get install -y python3.11-doc'): pydoc_root(tmp_path)
    (tmp_path / 'x.html').write_text('<p>no main body</p>')
    with pytest.raises(DataFormatError, match='x.html'): read_doc_page(tmp_path / 'x.html')
    build_text_corpus(tmp_path / 'c', 'stdlib', limit=10, **CPU_SPANS)
    lines = (tmp_path / 'c' / 'documents.jsonl').read_text().splitlines()
    (tmp_path / 'c' / 'documents.jsonl').write_text('\n'.join(lines[:2] + ['{not json'] + lines[3:]) + '\n')
    with pytest.raises(DataFormatError, match=r'documents.jsonl:3: not a JSON object'): TextCorpus(tmp_path / 'c')
    with pytest.raises(FileNotFoundError, match='vssl text-corpus'): TextCorpus(tmp_path / 'nothing')
    with pytest.raises(ValueError, match='unknown text source'): build_text_corpus(tmp_path / 'd', 'wikipedia')


def test_pydoc_corpus_when_installed(tmp_path):
    try: root = pydoc_root()
    except FileNotFoundError: pytest.skip("Debian's python3.11-doc is not installed (the stdlib corpus covers the rest)")
    m = build_text_corpus(tmp_path, 'pydoc', limit=40, min_span=32, max_span=512)
    c = TextCorpus(tmp_path)
    assert m['source'] == 'pydoc' and m['documents'] > 30 and not m['unreadable']
    assert m['too_short']['count'] == sum(d['words'] < 2048 for d in c.docs)
    assert all(d['paragraphs'] and '¶' not in ' '.join(d['paragraphs']) for d in c.docs)


@pytest.fixture
def no_network(monkeypatch):
    "HF offline variables set, and every socket connection or name lookup raises."
    monkeypatch.setenv('HF_HUB_OFFLINE', '1'); monkeypatch.setenv('TRANSFORMERS_OFFLINE', '1')
    def refuse(*a, **k): raise OSError(f'network access attempted in an offline test: {a[1:] if len(a) > 1 else a}')
    for name in ('connect', 'connect_ex'): monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse); monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    with pytest.raises(OSError, match='network access attempted'):   # the block works: a test that downloads fails
        socket.create_connection(('example.org', 443), timeout=1)


def test_text_stack_runs_offline_and_declutr_trains(no_network, corpus, tmp_path):
    import vssl_nb.text_embed as TE
    from vssl_nb.methods.declutr import train_declutr
    TE._ENCODERS.clear(); TE.text_tokenizer.cache_clear()          # load everything again, with the network blocked
    texts = ['A list is a mutable sequence.', 'Sockets connect processes over a network.']
    e = TE.embed_text(texts, precision='fp32')
    assert e.shape == (2, 384) and torch.isfinite(e).all()
    ref = TE.MiniLMReference().embed(texts)
    assert torch.allclose(torch.nn.functional.normalize(e, dim=1), ref, atol=1e-4)
    enc = TE.small_text_encoder(max_length=32, hidden_size=32, intermediate_size=64)
    log = train_declutr(enc, corpus, steps=12, lr=2e-3, batch_size=8, run_dir=tmp_path / 'run', log_every=3, checkpoint_minutes=None)
    assert log[-1]['step'] == 12 and log[-1]['contrastive'] < log[0]['contrastive'] and np.isfinite(log[-1]['mlm'])
    saved = TE.embed_text(texts, tmp_path / 'run' / 'encoder', precision='fp32')
    assert torch.allclose(saved, enc.embed(texts), atol=1e-5)
    m = TE.text_evaluation(lambda t: TE.embed_text(t, tmp_path / 'run' / 'encoder'), corpus, label='family', min_docs=1, per_doc=4)
    assert 0 <= m['span_R@1'] <= 1 and m['span_n'] >= 2 and 0 <= m['para_knn'] <= 1


def test_declutr_optimiser_matches_the_paper():
    from vssl_nb.methods.declutr import DeCLUTR
    from vssl_nb.text_embed import small_text_encoder
    from vssl_nb.train import param_groups
    r = DeCLUTR(small_text_encoder(hidden_size=32, intermediate_size=64))
    decay, no_decay = param_groups(r, 0.1)
    names = {id(p): n for n, p in r.named_parameters()}
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all('LayerNorm' in names[id(p)] or names[id(p)].endswith('bias') for p in no_decay['params'])
    assert not any('LayerNorm' in names[id(p)] or names[id(p)].endswith('bias') for p in decay['params'])
    with pytest.raises(TypeError, match='TextEncoder'): DeCLUTR(torch.nn.Linear(2, 2))


def test_cli_text_corpus(tmp_path, capsys):
    from vssl_nb.text import text_corpus
    assert text_corpus(out=str(tmp_path / 'c'), source='stdlib', min_span=8, max_span=32, limit=30) == 0
    out = capsys.readouterr().out
    man = json.loads((tmp_path / 'c' / 'manifest.json').read_text())
    assert f"{man['documents']} documents" in out and f"{man['too_short']['count']} too short" in out
    from fastcore.script import CliError
    with pytest.raises(CliError, match='python3.11-doc'): text_corpus(out=str(tmp_path / 'd'), source='pydoc', root=str(tmp_path))


def test_text_corpus_through_the_vssl_dispatcher(tmp_path, monkeypatch, capsys):
    "The function parses as a subcommand (the lead adds its COMMANDS row; here it is added for the test)."
    import vssl_nb.cli as cli
    monkeypatch.setitem(cli.COMMANDS, 'text-corpus', ('vssl_nb.text', 'text_corpus', 'build a text corpus'))
    assert cli.main(['text-corpus', '--out', str(tmp_path / 'c'), '--source', 'stdlib', '--min-span', '8', '--max-span', '32',
                     '--limit', '20']) == 0
    assert (tmp_path / 'c' / 'manifest.json').is_file()
    assert cli.main(['text-corpus', '--source', 'pydoc', '--root', str(tmp_path), '--out', str(tmp_path / 'd')]) == 1
    assert 'python3.11-doc' in capsys.readouterr().err
    parser, _ = cli.command_parser('text-corpus')
    assert 'stdlib' in parser.format_help() and 'num_anchors*max_span*2' in parser.format_help()


def test_declutr_template_end_to_end(vssl_env):
    "The experiment template with a tiny run: MLM then DeCLUTR on the standard-library corpus, evaluated on held-out documents."
    from conftest import vssl
    r = vssl('run', 'declutr', '-p', 'mlm_steps', 3, '-p', 'steps', 3, '-p', 'lr', '5e-4', '-p', 'hidden_size', 64, '--run-id', 't')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((vssl_env['runs'] / 'declutr' / 't' / 'metrics.json').read_text())
    assert m['encoder'] == 'small' and m['source_used'] == 'stdlib' and m['span_n'] >= 10
    assert m['span_chance_R@1'] == pytest.approx(1 / m['span_n']) and 0 <= m['span_R@1'] <= 1 and 0 < m['para_chance'] < 1
    assert (vssl_env['data'] / 'text' / 'stdlib-8-32' / 'manifest.json').is_file()
    assert (vssl_env['runs'] / 'declutr' / 't' / 'declutr' / 'encoder' / 'config.json').is_file()
