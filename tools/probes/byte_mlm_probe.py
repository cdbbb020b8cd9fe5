# Laptop-profile probe (issue 24; stand-alone; adapted from ../shared/notes/probes/byte_mlm_modernbert.py): a
# ModernBERT-style masked LM on raw Wikipedia bytes from the mirror, one line of JSON per run (held-out loss curve).
# usage: probe.py key=value ...  (L, steps, H, seq, batch, lr, warm, init, mask, seed, heads, inter)
import os, sys, time, glob, tempfile, json, numpy as np, torch, pyarrow.parquet as pq
from transformers import ModernBertConfig, ModernBertForMaskedLM
a = dict(L=1, steps=600, H=128, seq=128, batch=32, lr=1e-3, warm=0.05, init=0.02, mask=0.15, seed=0, heads=0, inter=0, wd=0.01, b2=0.98)
for kv in sys.argv[1:]:
    k, v = kv.split("="); a[k] = type(a[k])(float(v)) if isinstance(a[k], float) else int(v)
L, STEPS, H, SEQ, B, LR = a["L"], a["steps"], a["H"], a["seq"], a["batch"], a["lr"]
torch.manual_seed(a["seed"]); torch.set_num_threads(int(os.environ.get("THREADS", 2)))
DATA = os.environ.get("DWT_DATA_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data"))
cache = os.path.join(tempfile.gettempdir(), "byte_mlm_probe.npy")
try:
    data = np.load(cache)
except FileNotFoundError:
    txt = []
    for f in sorted(glob.glob(os.path.join(DATA, 'corpora/wikipedia-en/*.parquet')))[:2]:
        txt += pq.read_table(f, columns=['text']).column('text').to_pylist()
    b = "\n".join(txt).encode('utf-8', 'ignore')[:60_000_000]
    data = np.frombuffer(b, dtype=np.uint8).astype(np.int64); np.save(cache, data)
n = len(data) // SEQ; blocks = data[: n * SEQ].reshape(n, SEQ)
nval = max(128, 128 * 128 // SEQ)
val, train = blocks[:nval], blocks[nval:]
MASK, V = 256, 260
cfg = ModernBertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=a["heads"] or max(1, H // 64),
    intermediate_size=a["inter"] or 2 * H, max_position_embeddings=SEQ, global_attn_every_n_layers=1, pad_token_id=257,
    bos_token_id=258, eos_token_id=259, cls_token_id=258, sep_token_id=259, mask_token_id=MASK, initializer_range=a["init"])
m = ModernBertForMaskedLM(cfg)
opt = torch.optim.AdamW(m.parameters(), lr=LR, betas=(0.9, a["b2"]), weight_decay=a["wd"])
warm = max(1, int(STEPS * a["warm"]))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (STEPS - s) / (STEPS - warm))))
def mask(x, g):
    x = torch.as_tensor(x); lab = x.clone(); p = torch.rand(x.shape, generator=g) < a["mask"]
    lab[~p] = -100; inp = x.clone(); inp[p] = MASK; return inp, lab
gv = torch.Generator().manual_seed(7)
vin, vlab = mask(val, gv)
if a["mask"] != 0.15:   # held-out always at 15% so losses compare
    vx = torch.as_tensor(val); vlab = vx.clone(); p = torch.rand(vx.shape, generator=torch.Generator().manual_seed(7)) < 0.15
    vlab[~p] = -100; vin = vx.clone(); vin[p] = MASK
def evaluate():
    m.eval(); tot = 0.0; cor = 0; cnt = 0
    with torch.no_grad():
        for i in range(0, len(vin), 64):
            lab = vlab[i:i+64]; lg = m(input_ids=vin[i:i+64]).logits; k = lab != -100
            tot += torch.nn.functional.cross_entropy(lg[k], lab[k], reduction="sum").item(); cor += (lg[k].argmax(-1) == lab[k]).sum().item(); cnt += k.sum().item()
    m.train(); return tot / cnt, cor / cnt
g = torch.Generator().manual_seed(1 + a["seed"]); t0 = time.time(); rng = np.random.default_rng(a["seed"])
curve = []
for s in range(STEPS):
    idx = rng.integers(0, len(train), B); inp, lab = mask(train[idx], g)
    loss = m(input_ids=inp, labels=lab).loss; loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % max(1, STEPS // 6) == 0 or s + 1 == STEPS:
        vl, va = evaluate(); curve.append((s + 1, round(vl, 3), round(va * 100, 1)))
el = time.time() - t0
rec = dict(args=a, final=curve[-1][1], acc=curve[-1][2], curve=curve, secs=round(el), tok_s=round(STEPS * B * SEQ / el))
print(json.dumps(rec), flush=True)
with open(os.environ.get("PROBE_RESULTS", "probe_results.jsonl"), "a") as f: f.write(json.dumps(rec) + "\n")
